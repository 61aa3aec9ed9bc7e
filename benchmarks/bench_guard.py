"""What the guard costs and what its query watch catches.

    python benchmarks/bench_guard.py [--quick] [--sizes 64,224] [--no-watch] [--images 20] [--requests 200] [--out guard.json]

For each model (``demo``: DenseNet121 with random weights at 64 px; ``densenet224``: DenseNet121 at
224 px; 3 classes, 1 channel), with the guard's defaults (defense ``jpeg:quality=75+tv``, the
squeeze detector calibrated on phantoms at 5% FPR):

* **in process**, batch 1: the bare model's forward (``Classifier.logits``) and ``Guard.predict``
  on the same phantom tensors, p50 and p95 of ``--requests`` calls each, interleaved; the
  guard's overhead as a ratio to the bare model (goal: at most 25% at p95 at 224 px); the same
  for two cheaper guards (``cheaper_guards``: the squeeze detector with one squeezer, and the
  defense alone), what each part of the guard costs;
* **through HTTP** (``medrobust guard serve --no-auth`` on a free loopback port, the watch off):
  one PNG per ``POST /v1/predict``, p50 and p95; the server's own overhead is each request's HTTP
  time minus the ``Guard.predict`` time the server reports for it (its ``Server-Timing`` header's
  ``guard``), p50 and p95 (goal: under 5 ms at p50); beside it the guard's time in the server
  against in process (the same computation in another process and thread);
* **throughput**: 1, 8 and 32 concurrent HTTP clients, ``--requests`` requests in all per level,
  requests per second and p50/p95 latency.

The query watch (the first size's model, the server's watch at its defaults; ``--no-watch`` skips it): medrobust's Square attack
(8/255, up to 200 queries) through HTTP (``RemoteGuard``), each image under its own token (a
tenant of a temporary data directory: its own history), the attacker's first look at the image
counted as a query: queries until the server withholds its answer, median over ``--images``
images; and false flags per 10,000 benign queries through the same watch (in process): the
detector study's benign changes (``detection.benign.benign_changes``, 3 draws of the 4 changes
per image, plus the image itself: 13 queries per image, each image's copies in a row) of distinct
phantoms, ``--benign`` queries in all.

``--device cuda``: the guard and the bare model on the GPU (the server too); ``--no-http``: in process only.
``--quick``: the 64 px model only, 10 requests, 2 images, 260 benign queries (a check that it runs). Prints JSON (and
writes it with --out). Numbers are wall times on a shared machine: compare the ratios in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


def note(text: str) -> None:
    """Progress on stderr (stdout holds the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * percentile(values, 50), 3), "p95_ms": round(1000 * percentile(values, 95), 3),
            "n": len(values)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(size: int, root: Path) -> Path:
    from medrobust.models import build_classifier, save_checkpoint

    torch.manual_seed(0)
    model = build_classifier("densenet121", CLASSES, size).eval()
    return save_checkpoint(model, root / f"densenet121-{size}")


def phantoms(size: int, n: int, seed: int) -> torch.Tensor:
    from medrobust.data.phantom import PhantomDataset

    ds = PhantomDataset(per_class=max(1, n // 3 + 1), size=size, seed=seed)
    return torch.stack([ds[i][0] for i in range(n)])


CHEAPER_GUARDS: dict[str, dict[str, Any]] = {
    "one squeezer (squeeze:squeezers=bits:bits=5)": {"detectors": ["squeeze:squeezers=bits:bits=5"]},
    "the defense as the squeezer": {"detectors": ["squeeze:squeezers=jpeg:quality=75+tv"]},
    "defense only (no detector)": {"detectors": None},
}
"""Beside the defaults, what each part of the guard costs: a squeeze detector with one squeezer
(the image, one copy and the defended copy: three images in the model's pass), one whose squeezer
is the defense itself (it shares the defended copy: two images), and the defense alone (two: the
image for the undefended answer, and the defended copy)."""


def _overheads(bare: list[float], guarded: list[float]) -> dict[str, float]:
    return {f"overhead_ratio_p{q}": round((percentile(guarded, q) - percentile(bare, q)) / percentile(bare, q), 3)
            for q in (50, 95)}


def in_process(checkpoint: Path, calibration: Path, x: torch.Tensor, requests: int, device: str = "cpu"
               ) -> dict[str, Any]:
    import medrobust as mr

    guards = {"defaults": mr.guard(str(checkpoint), calibration=str(calibration), device=device)}
    guards.update({name: mr.guard(str(checkpoint), calibration=str(calibration), device=device, **kwargs)
                   for name, kwargs in CHEAPER_GUARDS.items()})
    model = guards["defaults"].model
    bare: list[float] = []
    guarded: dict[str, list[float]] = {name: [] for name in guards}
    steps: dict[str, list[float]] = {}
    for i in range(requests + 2):
        image = x[i % len(x)][None]
        t = time.perf_counter()
        with torch.no_grad():
            model.logits(image, 1)
        b = time.perf_counter() - t
        for name, guard in guards.items():  # interleaved with the bare model: the same machine state
            timings: dict[str, float] = {}
            t = time.perf_counter()
            guard.predict(image, batch_size=1, timings=timings if name == "defaults" else None)
            if i >= 2:  # the first calls warm up
                guarded[name].append(time.perf_counter() - t)
                for k, v in timings.items():
                    steps.setdefault(k, []).append(v)
        if i >= 2:
            bare.append(b)
    out = {"bare_model": ms(bare), "guard": ms(guarded["defaults"]), "steps": {k: ms(v) for k, v in steps.items()},
           **_overheads(bare, guarded["defaults"])}
    out["cheaper_guards"] = {name: {"guard": ms(guarded[name]), **_overheads(bare, guarded[name])}
                             for name in CHEAPER_GUARDS}
    return out


class Server:
    def __init__(self, checkpoint: Path, calibration: Path, watch: bool, data_dir: Path | None = None,
                 device: str = "cpu") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        auth = ["--data-dir", str(data_dir)] if data_dir is not None else ["--no-auth"]
        command = [sys.executable, "-m", "medrobust", "guard", "serve", "--model", str(checkpoint), "--device", device,
                   "--calibration",
                   str(calibration), *auth, "--port", str(self.port), "--stop-with-parent", str(os.getpid())]
        self.process = subprocess.Popen(command + ([] if watch else ["--no-watch"]), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("the guard server exited at start")
            time.sleep(0.3)
        raise TimeoutError("the guard server did not start in 600 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def png_files(x: torch.Tensor) -> list[bytes]:
    from medrobust.layer.guard_remote import png_bytes

    return [png_bytes(image) for image in x]


def server_seconds(response: httpx.Response) -> dict[str, float]:
    """The server's own account of a request: its ``Server-Timing`` header, in seconds."""
    parts = (p.split(";dur=") for p in response.headers.get("Server-Timing", "").split(", ") if ";dur=" in p)
    return {name: float(ms_text) / 1000 for name, ms_text in parts}


def http_latency(url: str, pngs: list[bytes], requests: int) -> tuple[list[float], list[dict[str, float]]]:
    """Wall times of ``requests`` sequential requests, and the server's timings of each."""
    times, spent = [], []
    with httpx.Client(timeout=120) as client:
        for i in range(requests + 2):
            t = time.perf_counter()
            r = client.post(url + "/v1/predict", files=[("images", ("x.png", pngs[i % len(pngs)], "image/png"))])
            r.raise_for_status()
            if i >= 2:
                times.append(time.perf_counter() - t)
                spent.append(server_seconds(r))
    return times, spent


async def _throughput(url: str, pngs: list[bytes], clients: int, requests: int) -> dict[str, Any]:
    times: list[float] = []
    left = [requests]

    async def one(client: httpx.AsyncClient) -> None:
        while left[0] > 0:
            left[0] -= 1
            t = time.perf_counter()
            r = await client.post(url + "/v1/predict",
                                  files=[("images", ("x.png", pngs[left[0] % len(pngs)], "image/png"))])
            r.raise_for_status()
            times.append(time.perf_counter() - t)

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(one(client) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return {"clients": clients, "requests_per_s": round(len(times) / elapsed, 2), **ms(times)}


def served(checkpoint: Path, calibration: Path, x: torch.Tensor, requests: int, guard_p50_ms: float,
           device: str = "cpu") -> dict[str, Any]:
    server = Server(checkpoint, calibration, watch=False, device=device)
    try:
        pngs = png_files(x)
        times, spent = http_latency(server.url, pngs, requests)
        guard_in_server = [s["guard"] for s in spent]
        own = [t - g for t, g in zip(times, guard_in_server)]  # HTTP, multipart, files, JSON: all but Guard.predict
        out = {"http": ms(times), "guard_in_server": ms(guard_in_server),
               "steps_in_server": {k: ms([s[k] for s in spent]) for k in spent[0] if k != "guard"} if spent else {},
               "server_overhead": ms(own)}
        out["server_overhead_p50_ms"] = out["server_overhead"]["p50_ms"]
        out["guard_in_server_over_in_process_p50"] = round(percentile(guard_in_server, 50) * 1000 / guard_p50_ms, 3)
        out["throughput"] = [asyncio.run(_throughput(server.url, pngs, c, requests)) for c in (1, 8, 32)]
        return out
    finally:
        server.stop()


def query_watch(checkpoint: Path, calibration: Path, size: int, images: int, benign: int, root: Path) -> dict[str, Any]:
    """Square through HTTP against the server with its watch on (its defaults), each image attacked
    with its own token (so its own history); then the benign replay through the same watch."""
    from medrobust.attacks.square import SquareAttack
    from medrobust.detection.benign import benign_changes
    from medrobust.detection.query_watch import QueryWatch
    from medrobust.layer.guard_remote import QueryWatchFlagged, RemoteGuard
    from medrobust.service.store import Store

    x = phantoms(size, max(images, benign // 13 + 1), seed=77)
    store = Store(root / "service")
    tokens = [store.create_token(f"attacker-{i}") for i in range(images)]
    server = Server(checkpoint, calibration, watch=True, data_dir=root / "service")
    flagged_at: list[int | None] = []
    sent_by_attack: list[int] = []  # queries sent per image, flagged or not (Square stops once the label changes)
    try:
        for i, token in enumerate(tokens):
            remote = RemoteGuard(server.url, token=token, stop_when_flagged=True)
            image = x[i : i + 1]
            label = remote(image).argmax(1)  # the attacker's first look: a query like the others
            try:
                SquareAttack(eps=8 / 255, queries=200, seed=i)(remote, image, label)
            except QueryWatchFlagged:
                pass
            flagged_at.append(remote.flagged_at)
            sent_by_attack.append(len(remote.answers))
            remote.close()
    finally:
        server.stop()
    watch = QueryWatch()
    sent = flags = 0
    for i in range(min(len(x), benign // 13)):
        changed = [benign_changes(x[i : i + 1], generator=seed) for seed in range(3)]
        for copy in [x[i]] + [c[name][0] for c in changed for name in c]:  # 13 copies of the image, in a row
            flags += watch.observe("clinic", copy.numpy()).flagged
            sent += 1
    found = [q for q in flagged_at if q is not None]
    return {"square_eps": "8/255", "square_max_queries": 200, "images": images,
            "queries_until_flagged": flagged_at, "queries_sent": sent_by_attack,
            "median_queries_until_flagged": statistics.median(found) if found else None,
            "not_flagged": sum(q is None for q in flagged_at), "benign_queries": sent,
            "false_flags_per_10000_benign": round(10_000 * flags / max(sent, 1), 2), "settings": QueryWatch().settings()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 px only, few requests and images")
    parser.add_argument("--images", type=int, default=20, help="images Square attacks (median of queries until flagged)")
    parser.add_argument("--requests", type=int, default=200, help="requests per latency figure")
    parser.add_argument("--benign", type=int, default=10_400, help="benign queries replayed")
    parser.add_argument("--sizes", default="64,224", help="image sizes of the models, comma-separated")
    parser.add_argument("--no-watch", action="store_true", help="skip the query watch's figures")
    parser.add_argument("--no-http", action="store_true", help="in process only: no server, no throughput")
    parser.add_argument("--device", default="cpu", help="where the guard runs: cpu or cuda (the bare model too)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = [64] if args.quick else [int(v) for v in args.sizes.split(",")]
    requests, images, benign = (10, 2, 260) if args.quick else (args.requests, args.images, args.benign)
    result: dict[str, Any] = {"machine": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                              "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
                              "device": args.device,
                              "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        root = Path(tmp)
        import medrobust as mr

        for size in sizes:
            calibration = root / f"calibration-{size}"
            mr.write_phantoms(calibration, per_class=10, size=size, seed=5)
            checkpoint = build_model(size, root)
            x = phantoms(size, 8, seed=9)
            note(f"{size} px: in process")
            local = in_process(checkpoint, calibration, x, requests, args.device)
            entry = {"model": f"densenet121 (random weights) at {size} px", "in_process": local}
            if not args.no_http:
                note(f"{size} px: through HTTP")
                entry.update(served(checkpoint, calibration, x, requests, local["guard"]["p50_ms"], args.device))
            result["models"][str(size)] = entry
            if size == sizes[0] and not args.no_watch and not args.no_http:
                note("query watch: Square through HTTP, then the benign replay")
                result["query_watch"] = query_watch(checkpoint, calibration, size, images, benign, root)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
