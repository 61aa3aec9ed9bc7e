"""A worker: claims jobs from the data directory's queue and runs each through the public layer.

``medrobust worker --data-dir DIR`` runs one. For each job it calls
``mr.evaluate(model, images, preset | config, run_dir=DIR/jobs/ID/RUN, progress=...)`` and
builds the report, so a job whose worker was killed is resumed by the next worker from its run
directory (the runner keeps every finished batch), not from zero. While it works:

* a background thread renews the job's lease every ``lease_s / 4`` seconds; when the worker
  dies the lease runs out and another worker reclaims the job;
* the progress adapter writes the stage, its count and its start time to the job's row (at
  most twice a second, and at every stage change) and checks the cancel flag at every batch,
  so a cancelled job stops within one batch.

On SIGTERM or SIGINT the worker stops after giving its job back to the queue (at the next batch),
and so does a worker started by ``medrobust serve`` when the server process is gone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Any

from medrobust.service.job_files import JobFiles, job_files
from medrobust.service.store import Store

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 0.5


class JobCancelled(Exception):
    """The job's cancel flag was set: stop at this batch."""


class LeaseLost(Exception):
    """Another worker took the job over (this one stalled past its lease): stop without writing."""


class WorkerStopping(Exception):
    """The worker was asked to stop (SIGTERM/SIGINT): give the job back to the queue."""


class JobProgress:
    """The public layer's progress protocol, written to the job's row."""

    def __init__(self, store: Store, job_id: str, worker_id: str, lease: "LeaseKeeper",
                 stop: threading.Event) -> None:
        self.store, self.job_id, self.worker_id, self.lease, self.stop = store, job_id, worker_id, lease, stop
        self.stages_finished = 0
        self._last_write = 0.0

    @contextmanager
    def stage(self, name: str, total: int):  # noqa: ANN201  (a context manager)
        bar = _StageBar(self, name, total)
        bar.write(force=True)
        yield bar
        self.stages_finished += 1
        bar.write(force=True)

    def check(self) -> None:
        """Raise when the job must stop here (cancelled, taken over, or the worker is stopping)."""
        if self.lease.lost.is_set():
            raise LeaseLost(self.job_id)
        if self.stop.is_set():
            raise WorkerStopping(self.job_id)
        if self.store.cancel_requested(self.job_id):
            raise JobCancelled(self.job_id)


class _StageBar:
    def __init__(self, owner: JobProgress, name: str, total: int) -> None:
        self.owner, self.name, self.total, self.done = owner, name, max(int(total), 0), 0
        self.started = time.time()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.owner.check()
        self.write()

    def write(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.owner._last_write < PROGRESS_WRITE_INTERVAL_S:
            return
        self.owner._last_write = now
        self.owner.store.set_progress(self.owner.job_id, self.owner.worker_id, stage=self.name, done=self.done,
                                      total=self.total, stage_started=self.started,
                                      stages_finished=self.owner.stages_finished)


class LeaseKeeper:
    """Renews a job's lease from a background thread; sets :attr:`lost` when the job was reclaimed."""

    def __init__(self, store: Store, job_id: str, worker_id: str, lease_s: float) -> None:
        self.store, self.job_id, self.worker_id, self.lease_s = store, job_id, worker_id, lease_s
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.lease_s / 4):
            try:
                if not self.store.renew_lease(self.job_id, self.worker_id, self.lease_s):
                    self.lost.set()
                    return
                self.store.worker_seen(self.worker_id, self.job_id)
            except Exception:  # a locked or busy database: try again at the next beat
                log.exception("lease renewal of job %s failed", self.job_id)


def job_arguments(request: dict[str, Any], files: JobFiles) -> dict[str, Any]:
    """``mr.evaluate``'s arguments for a job's request (as the web process stored it). The model
    and images are named relative to the job's upload folder, where the job runs, so that what
    the run records (config.yaml, metrics, report, skipped files) names the uploaded files, not
    the server's folders."""
    contract = request.get("contract") or {}
    arguments: dict[str, Any] = {
        "model": request["model_path"],  # relative to the upload folder, the job's working directory
        "images": request["images_path"],
        "preset": request.get("config") or request.get("preset") or "quick",
        "run_dir": Path("..") / files.run_name,  # beside the upload folder; recorded as output_dir ".."
        "trust_pickle": False,
        **{key: contract[key] for key in ("classes", "input_size", "intensity", "output_kind") if contract.get(key)},
    }
    if contract.get("normal_class"):
        arguments["normal_class"] = contract["normal_class"]
    return arguments


def headline(run_dir: Path) -> dict[str, Any] | None:
    """The scorecard's overall score and its rows, from the run's scorecard.json."""
    try:
        card = json.loads((run_dir / "scorecard.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {"overall": card.get("overall_text"), "overall_value": card.get("overall"),
            "rows": [{"label": r.get("label"), "score": r.get("score_text"), "threat_model": r.get("threat_model")}
                     for r in card.get("rows", [])],
            "not_tested": card.get("not_tested", [])}


def user_message(err: BaseException, files: JobFiles, request: dict[str, Any]) -> str:
    """The error as the tenant should read it: server paths replaced by the names they uploaded."""
    text = str(err) if isinstance(err, (ValueError, FileNotFoundError, KeyError)) else f"{type(err).__name__}: {err}"
    replacements = [(str(files.upload / request.get("model_path", "\0")), request.get("model_file") or "the model"),
                    (str(files.upload / request.get("images_path", "\0")), request.get("images_file") or "the images"),
                    (str(files.run), "the run folder"), (str(files.root), "the job folder")]
    for old, new in replacements:
        text = text.replace(old, new)
    return text.strip()[:4000] or type(err).__name__


class Worker:
    """Claims and runs jobs until stopped. ``once=True`` returns when the queue is empty."""

    def __init__(self, data_dir: str | Path, *, lease_s: float = 60.0, poll_s: float = 1.0,
                 device: str | None = None, execution: dict[str, Any] | None = None) -> None:
        """``execution``: where this worker's jobs run (the configuration's ``execution`` section,
        e.g. ``{"engine": "ray", "address": "auto"}``); None: in this process. The job's state
        stays in the service's database either way: the worker is the run's driver."""
        self.data_dir = Path(data_dir).resolve()  # jobs run from their upload folder (see run_job)
        self.store = Store(self.data_dir)
        self.lease_s, self.poll_s, self.device, self.execution = lease_s, poll_s, device, execution
        self.id = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.stop = threading.Event()

    def stop_with_parent(self, parent_pid: int, interval_s: float = 1.0) -> None:
        """Stop (giving the job back) once the process ``parent_pid`` is gone: a worker started
        by ``medrobust serve`` does not outlive it, however it ended (SIGTERM, SIGKILL)."""
        def watch() -> None:
            while not self.stop.wait(interval_s):
                if os.getppid() != parent_pid:
                    log.info("worker %s: its server %d is gone; stopping", self.id, parent_pid)
                    self.stop.set()

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: object) -> None:
            log.info("worker %s: signal %d, stopping after giving its job back", self.id, signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self, once: bool = False) -> None:
        self.store.register_worker(self.id, os.getpid(), socket.gethostname())
        try:
            while not self.stop.is_set():
                self.store.worker_seen(self.id, None)
                self.clean_up()
                row = self.store.claim(self.id, self.lease_s)
                if row is None:
                    if once:
                        return
                    self.stop.wait(self.poll_s)
                    continue
                self.run_job(row)
        finally:
            self.store.remove_worker(self.id)

    def clean_up(self) -> None:
        """Finish what dead workers left: cancellations of running jobs, deletions of finished ones."""
        self.store.cancel_unattended()
        for row in self.store.deleted_and_finished():
            job_files(self.data_dir, row).delete()
            self.store.forget_job(row["id"])

    def run_job(self, row: Any) -> None:
        job_id = row["id"]
        files = job_files(self.data_dir, row)
        request = json.loads(row["request"])
        log.info("worker %s: job %s (attempt %d)", self.id, job_id, row["attempts"])
        with LeaseKeeper(self.store, job_id, self.id, self.lease_s) as lease:
            self.store.worker_seen(self.id, job_id)
            progress = JobProgress(self.store, job_id, self.id, lease, self.stop)
            try:
                progress.check()
                arguments = job_arguments(request, files)
                if self.device:
                    arguments["device"] = self.device
                if self.execution:
                    arguments["execution"] = self.execution
                with chdir(files.upload):
                    metrics = _evaluate_and_report(arguments, progress)
            except JobCancelled:
                self.store.finish(job_id, self.id, "cancelled", stored_bytes=files.size())
                log.info("job %s cancelled", job_id)
            except LeaseLost:
                log.warning("job %s was taken over by another worker; leaving it", job_id)
            except (WorkerStopping, KeyboardInterrupt):
                self.store.release(job_id, self.id)
            except Exception as err:  # the job fails; the worker goes on with the next
                files.root.mkdir(parents=True, exist_ok=True)
                with files.log.open("a", encoding="utf-8") as out:
                    out.write(traceback.format_exc())
                self.store.finish(job_id, self.id, "failed", error=user_message(err, files, request),
                                  stored_bytes=files.size())
                log.warning("job %s failed: %s", job_id, err)
            else:
                skipped = [str(s) for s in (metrics.data.get("skipped") or [])]
                self.store.finish(job_id, self.id, "done", skipped=skipped, headline=headline(files.run),
                                  stored_bytes=files.size())
                log.info("job %s done", job_id)
        after = self.store.job(job_id)
        if after is not None and after["delete_requested"]:  # deleted while it ran: its files go now
            self.clean_up()


def _evaluate_and_report(arguments: dict[str, Any], progress: JobProgress):
    """Run the evaluation, then write report.html, statement.html and scorecard.json."""
    import medrobust as mr
    from medrobust.report import build_report

    metrics = mr.evaluate(progress=progress, **arguments)
    progress.check()
    build_report(Path(arguments["run_dir"]))
    return metrics
