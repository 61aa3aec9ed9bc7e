"""Load on the service: many clients polling a job's status and one uploading, while the worker runs a job.

    python benchmarks/bench_service.py [--seconds 30] [--clients 50] [--poll-interval 0] [--out r.json] [--keep]

Starts ``python -m medrobust serve --workers 1`` on a free port of 127.0.0.1 over a temporary data
directory, creates a token (``medrobust tokens create``), submits a heavy job (a small CNN checkpoint
and ``--busy-per-class`` x 3 phantoms of ``--busy-size`` px, preset ``--busy-preset``) and waits until
the worker runs it. Then, for ``--seconds``:

* ``--clients`` clients (asyncio, one ``httpx.AsyncClient`` each, so one connection each) loop
  ``GET /api/v1/jobs/{id}`` on the running job; with ``--poll-interval 0`` (the default) back to back,
  which measures the web process's capacity (a closed loop: latency ~ clients / throughput), otherwise
  each sleeps that long between its polls, as a dashboard or script polling the job would;
* one client uploads a tiny job (a small CNN checkpoint zip and 36 phantoms of 32 px, preset quick)
  with ``POST /api/v1/jobs`` and deletes it at once (``DELETE``), so that the tenant's queue does not
  grow; its latencies are counted apart from the polls.

Every request is timed with ``time.perf_counter`` from the call to the full response (the percentiles
are those of the successful requests); errors are non-2xx answers and exceptions, counted by kind. The
heavy job's status is read before and after the load, and every poll's answer is checked: the JSON says
whether the worker was busy throughout. The CPU seconds used in the window by the web process, the
worker, this load client and the rest of the machine (Linux /proc) are listed: all share the machine's
cores. ``--worker-nice`` renices the worker once its job runs, to show what the web process gains when
the worker yields the CPU to it. Prints JSON (and writes it with --out).

Goal (the service's issue): p99 under 100 ms and no errors with 50 clients polling and one uploading.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

API = "/api/v1/jobs"
STOP_WAIT_S = 45.0


# ---- setup: the uploads --------------------------------------------------------------------------
def zip_folder(folder: Path, out: Path, under: str) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{under}/{path.relative_to(folder).as_posix()}")
    return out


def build_uploads(root: Path, busy_per_class: int, busy_size: int, epochs: int) -> dict[str, Path]:
    """A small CNN trained briefly on 32 px phantoms (a zipped checkpoint), the tiny images zip
    (12 per class, 32 px) and the heavy job's images zip."""
    import torch

    import medrobust as mr
    from medrobust.data.phantom import PhantomDataset
    from medrobust.models import save_checkpoint
    from medrobust.models.augment import AugmentConfig
    from medrobust.models.training import TrainConfig, train_classifier
    from medrobust.models.zoo import build_classifier

    torch.manual_seed(0)
    data = PhantomDataset(per_class=100, size=32, seed=11)
    splits = {name: part.load()[:2] for name, part in data.splits().items()}
    model = build_classifier("small-cnn", data.classes, 32)
    train_classifier(model, splits["train"], splits["val"],
                     TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, seed=0, augment=AugmentConfig(True, 0, 0, 0, 0),
                                 early_stopping_patience=epochs))
    checkpoint = save_checkpoint(model.eval(), root / "chest-cnn")
    files = {"model": zip_folder(checkpoint, root / "chest-cnn.zip", "chest-cnn")}
    for name, per_class, size in (("tiny", 12, 32), ("busy", busy_per_class, busy_size)):
        images = root / f"{name}-xrays"
        mr.write_phantoms(images, per_class=per_class, size=size, seed=5)
        (images / "manifest.csv").unlink()
        files[name] = zip_folder(images, root / f"{name}-xrays.zip", f"{name}-xrays")
    return files


# ---- the service's processes ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def medrobust(*args: str) -> list[str]:
    return [sys.executable, "-m", "medrobust", *args]


def wait_for(url: str, timeout_s: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"medrobust serve exited with status {process.returncode} before answering {url}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def children(pid: int) -> list[int]:
    """The process's children (Linux /proc); [] elsewhere."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    return found


def renice(pid: int, nice: int) -> None:
    """Set the nice value of every thread of a process (Linux: each thread has its own)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(task), nice)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc); None when unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine_cpu_seconds() -> float | None:
    """CPU seconds every process of the machine has used (busy, not idle or iowait; /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def stop_service(process: subprocess.Popen) -> None:
    """SIGTERM ``medrobust serve`` (it stops its workers), then SIGKILL its process group if late."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # started with its own session: the workers left behind, if any
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


# ---- measurement ---------------------------------------------------------------------------------
@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    statuses_seen: Counter = field(default_factory=Counter)
    per_second: Counter = field(default_factory=Counter)

    def add(self, started: float, response: httpx.Response | None, error: BaseException | None, origin: float) -> None:
        if error is not None:
            self.errors[f"{type(error).__name__}"] += 1
        elif not response.is_success:
            self.errors[f"http {response.status_code}"] += 1
        else:
            self.latencies_s.append(time.perf_counter() - started)
        self.per_second[int(started - origin)] += 1


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of sorted values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


async def timed(tally: Tally, origin: float, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await call()
    except Exception as err:  # a timeout, a refused or reset connection: an error of that kind
        tally.add(started, None, err, origin)
        return None
    tally.add(started, response, None, origin)
    return response


async def poller(base_url: str, headers: dict[str, str], job_id: str, interval_s: float, start: asyncio.Event,
                 deadline: list[float], tally: Tally, origin: list[float]) -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30.0, limits=limits) as client:
        with contextlib.suppress(httpx.HTTPError):
            await client.get(f"{API}/{job_id}")  # open the connection before the clock starts
        await start.wait()
        while time.perf_counter() < deadline[0]:
            response = await timed(tally, origin[0], lambda: client.get(f"{API}/{job_id}"))
            if response is not None and response.is_success:
                tally.statuses_seen[response.json().get("status")] += 1
            if interval_s:
                await asyncio.sleep(interval_s)


async def uploader(base_url: str, headers: dict[str, str], files: dict[str, Path], start: asyncio.Event,
                   deadline: list[float], uploads: Tally, deletes: Tally, origin: list[float]) -> None:
    model, images = files["model"].read_bytes(), files["tiny"].read_bytes()
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60.0) as client:
        await start.wait()
        while time.perf_counter() < deadline[0]:
            form = {"model": ("chest-cnn.zip", model, "application/zip"), "images": ("xrays.zip", images, "application/zip")}
            response = await timed(uploads, origin[0], lambda form=form: client.post(API, files=form, data={"preset": "quick"}))
            if response is not None and response.is_success:
                url = f"{API}/{response.json()['id']}"
                await timed(deletes, origin[0], lambda url=url: client.delete(url))
            elif response is not None and response.status_code == 429:
                await asyncio.sleep(0.5)  # the tenant's queue is full: an error, counted; do not spin on it


async def load(base_url: str, token: str, job_id: str, files: dict[str, Path], args: argparse.Namespace,
               pids: dict[str, list[int]]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    polls, uploads, deletes = Tally(), Tally(), Tally()
    start, deadline, origin = asyncio.Event(), [0.0], [0.0]
    tasks = [asyncio.create_task(poller(base_url, headers, job_id, args.poll_interval, start, deadline, polls, origin))
             for _ in range(args.clients)]
    if args.uploaders:
        tasks += [asyncio.create_task(uploader(base_url, headers, files, start, deadline, uploads, deletes, origin))
                  for _ in range(args.uploaders)]
    await asyncio.sleep(1.0)  # every client connected
    cpu_before = {name: [cpu_seconds(p) for p in ids] for name, ids in pids.items()}
    machine_before = machine_cpu_seconds()
    origin[0] = time.perf_counter()
    deadline[0] = origin[0] + args.seconds
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - origin[0]
    cpu_after = {name: [cpu_seconds(p) for p in ids] for name, ids in pids.items()}
    machine_after = machine_cpu_seconds()
    cpu: dict[str, Any] = {}
    for name in pids:
        used = [b - a for a, b in zip(cpu_before[name], cpu_after[name]) if a is not None and b is not None]
        cpu[name] = {"cpu_s": round(sum(used), 2), "cores_busy": round(sum(used) / elapsed, 2)} if used else None
    if machine_before is not None and machine_after is not None:
        total = machine_after - machine_before
        ours = sum(c["cpu_s"] for c in cpu.values() if c)
        cpu["whole_machine"] = {"cpu_s": round(total, 2), "cores_busy": round(total / elapsed, 2)}
        others = max(0.0, total - ours)  # a small negative: clock-tick rounding
        cpu["other_processes"] = {"cpu_s": round(others, 2), "cores_busy": round(others / elapsed, 2)}
    return {"elapsed_s": elapsed, "polls": polls, "uploads": uploads, "deletes": deletes, "cpu": cpu}


def latency_summary(tally: Tally, elapsed_s: float, detailed: bool) -> dict[str, Any]:
    values = sorted(tally.latencies_s)
    summary: dict[str, Any] = {
        "requests" if detailed else "count": len(values) + sum(tally.errors.values()),
        "ok": len(values),
    }
    if detailed:
        summary["rps"] = round(len(values) / elapsed_s, 1)
        summary.update({f"p{q}_ms": ms(percentile(values, q)) for q in (50, 90, 99)})
        summary["mean_ms"] = ms(sum(values) / len(values)) if values else None
    else:
        summary["p50_ms"] = ms(percentile(values, 50))
    summary["max_ms"] = ms(values[-1] if values else None)
    summary["errors"] = sum(tally.errors.values())
    summary["errors_by_kind"] = dict(tally.errors)
    return summary


def job_state(base_url: str, token: str, job_id: str) -> dict[str, Any]:
    row = httpx.get(f"{base_url}{API}/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
    return {key: row.get(key) for key in ("status", "stage", "stage_done", "stage_total", "stages_finished", "error")}


def wait_until_running(base_url: str, token: str, job_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = job_state(base_url, token, job_id)
        if state["status"] == "running" and state["stage"]:
            return state
        if state["status"] not in ("queued", "running"):
            raise RuntimeError(f"the heavy job ended before the load started: {state}")
        time.sleep(0.5)
    raise TimeoutError(f"the heavy job was not running within {timeout_s} s")


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("medrobust", "fastapi", "starlette", "uvicorn", "anyio", "httpx", "h11", "uvloop", "httptools"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    t = time.perf_counter()
    files = build_uploads(root / "uploads", args.busy_per_class, args.busy_size, args.epochs)
    setup_s = time.perf_counter() - t
    data_dir, port = root / "service", free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = (root / "serve.log").open("wb")
    web = subprocess.Popen(medrobust("serve", "--data-dir", str(data_dir), "--port", str(port), "--workers", "1",
                                     "--tenant-jobs", "1000"), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(base_url + "/healthz", 120, web)
        token = subprocess.run(medrobust("tokens", "create", "--data-dir", str(data_dir), "--tenant", "bench"),
                               capture_output=True, text=True, check=True).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        with files["model"].open("rb") as model, files["busy"].open("rb") as images:
            response = httpx.post(base_url + API, headers=headers, timeout=300, data={"preset": args.busy_preset},
                                  files={"model": ("chest-cnn.zip", model), "images": ("busy-xrays.zip", images)})
        if response.status_code != 202:
            raise RuntimeError(f"the heavy job was refused: {response.status_code} {response.text}")
        job_id = response.json()["id"]
        before = wait_until_running(base_url, token, job_id, 300)
        pids = {"web": [web.pid], "worker": children(web.pid), "load_client": [os.getpid()]}
        if args.worker_nice:
            for pid in pids["worker"]:
                renice(pid, args.worker_nice)
        measured = asyncio.run(load(base_url, token, job_id, files, args, pids))
        after = job_state(base_url, token, job_id)
    finally:
        stop_service(web)
        log.close()
    elapsed, polls = measured["elapsed_s"], measured["polls"]
    not_running = {status: n for status, n in polls.statuses_seen.items() if status != "running"}
    p99 = percentile(sorted(polls.latencies_s), 99)
    errors = sum(polls.errors.values()) + sum(measured["uploads"].errors.values()) + sum(measured["deletes"].errors.values())
    return {
        "benchmark": "service_load",
        "polling": latency_summary(polls, elapsed, detailed=True),
        "polling_timeline_requests_per_second": [polls.per_second.get(s, 0) for s in range(int(elapsed) + 1)],
        "uploads": latency_summary(measured["uploads"], elapsed, detailed=False),
        "deletes": latency_summary(measured["deletes"], elapsed, detailed=False),
        "worker_job": {
            "preset": args.busy_preset, "images": 3 * args.busy_per_class, "image_size": args.busy_size,
            "at_start": before, "at_end": after,
            "busy_throughout": after["status"] == "running" and not not_running,
            "finished_during_measurement": after["status"] != "running" or bool(not_running),
            "polls_answering_another_status": not_running,
        },
        "cpu_during_load": measured["cpu"],
        "goal": {"p99_under_100_ms": p99 is not None and p99 < 0.1, "no_errors": errors == 0},
        "settings": {
            "seconds": args.seconds, "measured_s": round(elapsed, 2), "clients": args.clients, "uploaders": args.uploaders,
            "poll_interval_s": args.poll_interval, "worker_nice": args.worker_nice,
            "polling": "back to back (closed loop: measures capacity)" if not args.poll_interval
            else f"each client sleeps {args.poll_interval} s between polls",
            "server": "python -m medrobust serve --workers 1 --tenant-jobs 1000 (uvicorn, one web process)",
            "client": "asyncio, one httpx.AsyncClient (one keep-alive connection) per client",
            "upload_bytes": {"model": files["model"].stat().st_size, "images": files["tiny"].stat().st_size},
            "busy_upload_bytes": files["busy"].stat().st_size,
            "setup_s": round(setup_s, 1),
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "packages": versions()},
        "note": "the load client, the web process and the worker (running its job) share this machine's "
                f"{os.cpu_count()} cores: the client's own CPU time (cpu_during_load.load_client) is taken from the "
                "server's, so the figures are a lower bound on what the web process alone would serve; "
                "cpu_during_load.other_processes is what anything else on the machine used in the window",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the measurement")
    parser.add_argument("--clients", type=int, default=50, help="clients polling the running job's status")
    parser.add_argument("--uploaders", type=int, default=1, help="clients uploading (and deleting) a tiny job")
    parser.add_argument("--poll-interval", type=float, default=0.0,
                        help="seconds each client sleeps between polls (0: back to back)")
    parser.add_argument("--busy-preset", default="thorough", help="the worker's job's preset")
    parser.add_argument("--busy-per-class", type=int, default=200, help="the worker's job: images per class")
    parser.add_argument("--busy-size", type=int, default=64, help="the worker's job: image side in px")
    parser.add_argument("--worker-nice", type=int, default=0,
                        help="renice the worker (every thread) to this value once its job runs "
                             "(0: as the server starts it, serve --worker-nice 10)")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs of the uploaded small CNN")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (data dir, uploads, serve.log)")
    args = parser.parse_args()

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)  # so that the service is stopped on kill too
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started with SIGINT ignored (cmd &)
    root = Path(tempfile.mkdtemp(prefix="bench-service-"))
    try:
        results = run(args, root)
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
