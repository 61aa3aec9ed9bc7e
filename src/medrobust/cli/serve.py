"""`medrobust serve`, `medrobust worker` and `medrobust tokens`: the service's processes and its
tokens (docs/service.md). Needs the ``service`` extra: ``pip install 'medrobust[service]'``."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from medrobust.cli.app import app, console, user_errors

tokens_app = typer.Typer(help="Create, list and revoke the service's API tokens (stored hashed in DIR).",
                         no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
tenants_app = typer.Typer(help="Set a tenant's own limits (stored in DIR; the server's options apply otherwise).",
                          no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")

DataDir = Annotated[Path, typer.Option("--data-dir", help="The service's data directory (database, uploads, runs).")]
LeaseOption = Annotated[float, typer.Option(
    "--lease-seconds", help="A running job whose worker is silent this long is taken over by another worker.")]
WORKER_RESTART_DELAY_S = 2.0
GRACEFUL_SHUTDOWN_S = 10.0
"""At shutdown, the longest the web process waits for requests in flight (an upload) to end."""
log = logging.getLogger(__name__)


def _service_modules():
    try:
        import uvicorn  # noqa: F401

        from medrobust.service import app as service_app
    except ImportError as err:
        raise ValueError(f"the service needs its extra ({err.name} is missing): pip install 'medrobust[service]'") from None
    return service_app


RayOption = Annotated[Optional[str], typer.Option(
    "--ray", metavar="ADDRESS", help="Hand each job's work to a Ray cluster: 'auto' (the cluster this machine joined), "
    "ray://HOST:PORT, or 'local'. Jobs keep their state in the service's database. Needs medrobust[scale].")]
RayWorkersOption = Annotated[Optional[int], typer.Option(
    "--ray-workers", min=1, help="Ray workers per job (default one per CPU of the cluster).")]


@app.command("serve")
@user_errors
def serve(
    data_dir: DataDir,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 for every interface).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes to start (0: the web process alone).")] = 1,
    lease_seconds: LeaseOption = 60.0,
    device: Annotated[Optional[str], typer.Option("--device", help="The workers' device: auto | cpu | cuda.")] = None,
    max_model_mb: Annotated[float, typer.Option("--max-model-mb", help="Largest model upload.")] = 2048,
    max_images_mb: Annotated[float, typer.Option("--max-images-mb", help="Largest images archive upload.")] = 4096,
    max_request_mb: Annotated[float, typer.Option("--max-request-mb", help="Largest whole request.")] = 6145,
    max_field_mb: Annotated[float, typer.Option("--max-field-mb", help="Largest text field (config).")] = 0.25,
    max_fields: Annotated[int, typer.Option("--max-fields", help="Most parts in one upload.")] = 32,
    max_members: Annotated[int, typer.Option("--max-members", help="Most members in an images archive.")] = 200_000,
    max_expanded_mb: Annotated[float, typer.Option(
        "--max-expanded-mb", help="Largest uncompressed size of an images archive.")] = 16384,
    max_ratio: Annotated[float, typer.Option("--max-ratio", help="Highest compression ratio of an archive.")] = 200,
    max_images: Annotated[int, typer.Option("--max-images", min=1, help="Most images one job may test.")] = 20_000,
    upload_idle_seconds: Annotated[float, typer.Option(
        "--upload-idle-seconds", min=0.1, help="An upload that sends no bytes this long is refused (400).")] = 30,
    tenant_jobs: Annotated[int, typer.Option("--tenant-jobs", help="Most queued + running jobs per tenant.")] = 2,
    tenant_gb: Annotated[float, typer.Option("--tenant-gb", help="Most GiB stored per tenant.")] = 50,
    job_hours: Annotated[float, typer.Option(
        "--job-hours", min=0.0001, help="Compute time after which a job is stopped (a tenant's own limit: medrobust "
        "tenants limit).")] = 2.0,
    max_attempts: Annotated[int, typer.Option(
        "--max-attempts", min=1, help="Workers that may take a job whose work was killed before it fails.")] = 3,
    ceiling: Annotated[Optional[list[str]], typer.Option(
        "--ceiling", metavar="NAME=N", help="Raise (or lower) a ceiling on a configuration's work parameters: steps, "
        "restarts, eot_samples, queries, n_copies, max_iter, epochs (repeatable).")] = None,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request.")] = False,
    worker_nice: Annotated[int, typer.Option(
        "--worker-nice", help="Priority the workers give up (0-19) so that requests are answered first.")] = 10,
    ray: RayOption = None,
    ray_workers: RayWorkersOption = None,
) -> None:
    """Start the web service (API at /api/v1, docs at /docs, dashboard at /) and its workers."""
    service_app = _service_modules()
    import uvicorn

    if ray or ray_workers:  # checked now, not at each job
        from medrobust.cli.option_values import execution_section

        execution_section(ray, ray_workers)

    from medrobust.service.limits import GiB, MiB, ServiceLimits

    limits = ServiceLimits(
        max_model_bytes=int(max_model_mb * MiB), max_images_bytes=int(max_images_mb * MiB),
        max_request_bytes=int(max_request_mb * MiB), max_field_bytes=int(max_field_mb * MiB), max_fields=max_fields,
        max_archive_members=max_members, max_expanded_bytes=int(max_expanded_mb * MiB), max_ratio=max_ratio,
        max_images=max_images, upload_idle_timeout_s=upload_idle_seconds, max_active_jobs=tenant_jobs,
        max_stored_bytes=int(tenant_gb * GiB), max_job_seconds=job_hours * 3600, max_attempts=max_attempts,
        ceilings=work_ceilings(ceiling or []))
    web = service_app.create_app(data_dir, limits)
    command = [sys.executable, "-m", "medrobust", "worker", "--data-dir", str(data_dir), "--lease-seconds",
               str(lease_seconds), "--stop-with-parent", str(os.getpid()), "--nice", str(worker_nice)] \
        + (["--device", device] if device else []) + (["--ray", ray] if ray else []) \
        + (["--ray-workers", str(ray_workers)] if ray_workers else [])
    pool = WorkerPool(command, workers)
    from medrobust.service.server import ShutdownServer

    server = ShutdownServer(uvicorn.Config(web, host=host, port=port, log_level="info", access_log=access_log,
                                           timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S), web.state.stopping)
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):  # uvicorn raises the signal again once shut down: we stop the workers first
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    pool.start()
    console.print(f"medrobust service on http://{host}:{port}/ (API docs /docs), data in {data_dir}, "
                  f"{workers} worker{'s' if workers != 1 else ''}", highlight=False)
    try:
        server.run()
    finally:  # the workers stop by themselves too when this process is killed (--stop-with-parent)
        pool.stop()
    if signal.SIGTERM in received:  # end as a process stopped by SIGTERM does
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    if received:
        raise typer.Exit(130)


def work_ceilings(items: list[str]) -> dict[str, int]:
    """The service's ceilings on work parameters with ``--ceiling NAME=N`` applied."""
    from medrobust.service.limits import WORK_CEILINGS

    ceilings = dict(WORK_CEILINGS)
    for item in items:
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in ceilings or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--ceiling {item!r}: write NAME=N with N a whole number of at least 1 and NAME one of "
                             f"{', '.join(ceilings)}")
        ceilings[name] = int(value)
    return ceilings


class WorkerPool:
    """Worker processes kept running: one that dies is started again after a short delay."""

    def __init__(self, command: list[str], count: int) -> None:
        self.command, self.count = command, count
        self.processes: list[subprocess.Popen] = []
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="worker-pool", daemon=True)

    def start(self) -> None:
        self.processes = [subprocess.Popen(self.command) for _ in range(self.count)]
        if self.count:
            self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(WORKER_RESTART_DELAY_S):
            for i, process in enumerate(self.processes):
                if process.poll() is not None and not self._stopping.is_set():
                    log.warning("worker %d exited with status %s; starting a new one", process.pid, process.returncode)
                    self.processes[i] = subprocess.Popen(self.command)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every worker (each gives its job back to the queue), then SIGKILL the late ones."""
        self._stopping.set()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


@app.command("worker")
@user_errors
def worker(
    data_dir: DataDir,
    lease_seconds: LeaseOption = 60.0,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", help="Wait between looks at an empty queue.")] = 1.0,
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda")] = None,
    once: Annotated[bool, typer.Option("--once", help="Stop when the queue is empty.")] = False,
    nice: Annotated[int, typer.Option(
        "--nice", help="Lower this worker's priority by N (0-19), e.g. on a machine that also answers requests.")] = 0,
    stop_with_parent: Annotated[Optional[int], typer.Option(
        "--stop-with-parent", hidden=True, help="Stop when this process (medrobust serve) is gone.")] = None,
    ray: RayOption = None,
    ray_workers: RayWorkersOption = None,
) -> None:
    """Run jobs from DIR's queue (start as many as the machine holds; they share DIR)."""
    from medrobust.service.worker import Worker

    if not (data_dir / "service.db").is_file():
        raise ValueError(f"--data-dir {data_dir}: no service database there; start `medrobust serve --data-dir "
                         f"{data_dir}` first, or give the data directory the server uses")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    if nice:
        os.nice(max(0, min(int(nice), 19)))
    from medrobust.cli.option_values import execution_section

    execution = execution_section(ray, ray_workers) if ray or ray_workers else None
    runner = Worker(data_dir, lease_s=lease_seconds, poll_s=poll_seconds, device=device, execution=execution)
    runner.install_signal_handlers()
    if stop_with_parent is not None:
        runner.stop_with_parent(stop_with_parent)
    runner.run(once=once)


@tokens_app.command("create")
@user_errors
def tokens_create(data_dir: DataDir,
                  tenant: Annotated[str, typer.Option("--tenant", help="The tenant (organisation) the token acts for.")]
                  ) -> None:
    """Create a token for TENANT (the tenant is created when new) and print it once: it is stored hashed."""
    from medrobust.service.store import Store

    token = Store(data_dir).create_token(tenant)
    console.print(token, highlight=False, markup=False)
    print(f"token for tenant {tenant!r}: shown once, store it now (only its hash is kept in {data_dir})", file=sys.stderr)


@tokens_app.command("list")
@user_errors
def tokens_list(data_dir: DataDir,
                tenant: Annotated[Optional[str], typer.Option("--tenant", help="Only this tenant's tokens.")] = None) -> None:
    """List tokens: id, tenant, first characters, created, revoked."""
    from datetime import datetime

    from medrobust.service.store import Store

    def when(t: float | None) -> str:
        return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")

    for info in Store(data_dir).list_tokens(tenant):
        console.print(f"{info.id}\t{info.tenant}\t{info.prefix}...\tcreated {when(info.created)}\t"
                      f"{'revoked ' + when(info.revoked) if info.revoked else 'active'}", highlight=False, markup=False)


@tokens_app.command("revoke")
@user_errors
def tokens_revoke(data_dir: DataDir,
                  token: Annotated[str, typer.Argument(help="The token's id (from tokens list) or its first characters.")]
                  ) -> None:
    """Revoke a token: requests with it answer 401 from now on."""
    from medrobust.service.store import TOKEN_PREFIX, Store

    store = Store(data_dir)
    if token.isdigit():
        count = store.revoke_token(int(token))
    elif token.startswith(TOKEN_PREFIX) and len(token) >= len(TOKEN_PREFIX) + 6:
        count = store.revoke_token(prefix=token[:len(TOKEN_PREFIX) + 6])
    else:
        raise ValueError(f"{token!r}: give a token id (medrobust tokens list) or the token's first characters "
                         f"({TOKEN_PREFIX}xxxxxx)")
    if not count:
        raise ValueError(f"no active token matches {token!r}; see medrobust tokens list --data-dir {data_dir}")
    console.print(f"revoked {count} token{'s' if count != 1 else ''}", highlight=False)


@tenants_app.command("limit")
@user_errors
def tenants_limit(
    data_dir: DataDir,
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant (as in medrobust tokens create).")],
    job_hours: Annotated[Optional[float], typer.Option(
        "--job-hours", min=0.0001, help="Compute time after which the tenant's jobs are stopped; leave out to "
        "return to the server's --job-hours.")] = None,
) -> None:
    """Give TENANT its own compute-time limit per job, for the jobs it submits from now on."""
    from medrobust.service.store import Store

    if not Store(data_dir).set_tenant_job_seconds(tenant, job_hours * 3600 if job_hours is not None else None):
        raise ValueError(f"no tenant {tenant!r} in {data_dir}; create it with medrobust tokens create --data-dir "
                         f"{data_dir} --tenant {tenant}")
    limit = f"{job_hours:g} h of compute per job" if job_hours is not None else "the server's limit (--job-hours)"
    console.print(f"tenant {tenant}: {limit}", highlight=False)
