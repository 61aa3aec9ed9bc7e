"""A worker: claims jobs from the data directory's queue and runs each in a process of its own.

``medrobust worker --data-dir DIR`` runs one. For each job it starts the job's process
(:mod:`medrobust.service.job_process`: ``mr.evaluate(model, images, preset | config,
run_dir=DIR/jobs/ID/RUN, progress=...)`` and the report) and watches it, so that it can end the
job's work at any moment, also in the middle of a batch that never returns:

* a background thread renews the job's lease every ``lease_s / 4`` seconds, with the compute
  time used so far; when the worker dies the lease runs out and another worker takes the job
  over, resuming it from its run directory (the runner keeps every finished batch);
* twice a second it reads the job's cancel flag and compute-time limit: a cancelled job, a job
  past its limit (it fails, "stopped at the time limit of ...", its finished stages kept), a job
  taken over by another worker, and the job of a worker told to stop (SIGTERM or SIGINT, or its
  ``medrobust serve`` gone: the job goes back to the queue) have their process ended at once
  (SIGTERM, then SIGKILL after :data:`END_GRACE_S`);
* a job whose process died without an outcome (killed, out of memory) goes back to the queue
  with that error, until it has been taken ``max_attempts`` times: then it fails with it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import medrobust
from medrobust.service.job_files import JobFiles, job_files
from medrobust.service.job_process import read_outcome
from medrobust.service.store import DEFAULT_MAX_ATTEMPTS, Store, attempts_error

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.5
"""How often the worker looks at its job's process, cancel flag and time limit."""
END_GRACE_S = 5.0
"""How long a job's process has to end after SIGTERM before it is killed."""

CANCELLED, TIME_LIMIT, LEASE_LOST, STOPPING = "cancelled", "time limit", "lease lost", "stopping"


def duration_text(seconds: float) -> str:
    """``7200`` -> ``"2 h"``, ``5400`` -> ``"1 h 30 min"``, ``90`` -> ``"1 min 30 s"``, ``0.5`` -> ``"0.5 s"``."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    whole = round(seconds)
    hours, minutes, secs = whole // 3600, whole % 3600 // 60, whole % 60
    parts = [f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(minutes) + [f"{secs} s"] * bool(secs and not hours)
    return " ".join(parts)


def time_limit_error(limit_s: float, row: Any) -> str:
    """The error of a job stopped at its compute-time limit."""
    finished = row["stages_finished"] if row is not None else 0
    during = f" during stage {row['stage']!r}" if row is not None and row["stage"] else ""
    return (f"stopped at the time limit of {duration_text(limit_s)} of compute time per job{during}; the "
            f"{finished} stage{'s' if finished != 1 else ''} it finished {'are' if finished != 1 else 'is'} kept. Test "
            "fewer images, attacks or steps, or ask the service's administrator for a longer limit")


def process_end_text(returncode: int | None) -> str:
    """How a job's process ended without writing its outcome."""
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        likely = " (out of memory, most likely)" if -returncode == signal.SIGKILL else ""
        return f"its process was killed by {name}{likely}"
    return f"its process ended with exit status {returncode} without a result"


class LeaseKeeper:
    """Renews a job's lease from a background thread; sets :attr:`lost` when the job was reclaimed."""

    def __init__(self, store: Store, job_id: str, worker_id: str, lease_s: float,
                 compute_s: Callable[[], float] | None = None) -> None:
        self.store, self.job_id, self.worker_id, self.lease_s = store, job_id, worker_id, lease_s
        self.compute_s = compute_s
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
                used = self.compute_s() if self.compute_s is not None else None
                if not self.store.renew_lease(self.job_id, self.worker_id, self.lease_s, used):
                    self.lost.set()
                    return
                self.store.worker_seen(self.worker_id, self.job_id)
            except Exception:  # a locked or busy database: try again at the next beat
                log.exception("lease renewal of job %s failed", self.job_id)


class Worker:
    """Claims and runs jobs until stopped. ``once=True`` returns when the queue is empty."""

    def __init__(self, data_dir: str | Path, *, lease_s: float = 60.0, poll_s: float = 1.0,
                 device: str | None = None, execution: dict[str, Any] | None = None) -> None:
        """``execution``: where this worker's jobs run (the configuration's ``execution`` section,
        e.g. ``{"engine": "ray", "address": "auto"}``); None: in the job's process. The job's state
        stays in the service's database either way: the worker is the run's driver."""
        self.data_dir = Path(data_dir).resolve()  # jobs run from their upload folder (see run_job)
        self.store = Store(self.data_dir)
        self.lease_s, self.poll_s, self.device, self.execution = lease_s, poll_s, device, execution
        self.id = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.stop = threading.Event()
        self.job_process: subprocess.Popen | None = None
        """The process of the job being run (None between jobs)."""

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
        """Run one claimed job in its own process and record how it ended."""
        job_id = row["id"]
        files = job_files(self.data_dir, row)
        used_before, started = float(row["compute_s"] or 0.0), time.monotonic()

        def used() -> float:
            return used_before + time.monotonic() - started

        log.info("worker %s: job %s (attempt %d)", self.id, job_id, row["attempts"])
        with LeaseKeeper(self.store, job_id, self.id, self.lease_s, used) as lease:
            self.store.worker_seen(self.id, job_id)
            try:
                files.attempt_outcome.unlink(missing_ok=True)
                process = self._start_job_process(job_id, files)
            except Exception as err:  # noqa: BLE001 — the job fails; the worker goes on with the next
                log.exception("job %s: its process could not be started", job_id)
                self.store.finish(job_id, self.id, "failed", error=f"the worker could not start the job's process "
                                  f"({type(err).__name__}: {err})", stored_bytes=files.size(), compute_s=used())
                return
            self.job_process = process
            try:
                reason, seen = self._watch(process, job_id, lease, used)
            except BaseException:
                end_process(process)
                self.store.release(job_id, self.id, compute_s=used())
                raise
            finally:
                self.job_process = None
            self._record_end(row, files, process, reason, seen, used())
        after = self.store.job(job_id)
        if after is not None and after["delete_requested"]:  # deleted while it ran: its files go now
            self.clean_up()

    def _start_job_process(self, job_id: str, files: JobFiles) -> subprocess.Popen:
        """``python -m medrobust.service.job_process`` for the job, in its own session (so that
        ending it ends what it started), with this medrobust first on its path."""
        command = [sys.executable, "-m", "medrobust.service.job_process", "--data-dir", str(self.data_dir),
                   "--job", job_id, "--worker", self.id, "--parent", str(os.getpid())]
        if self.device:
            command += ["--device", self.device]
        if self.execution:
            command += ["--execution", json.dumps(self.execution)]
        source = str(Path(medrobust.__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": source + (os.pathsep + path if path else "")}
        files.upload.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(command, cwd=files.upload, env=env, stdin=subprocess.DEVNULL, start_new_session=True)

    def _watch(self, process: subprocess.Popen, job_id: str, lease: LeaseKeeper,
               used: Callable[[], float]) -> tuple[str | None, Any]:
        """Wait for the job's process; end it when the job must stop. Returns why it was ended
        (None: it ended by itself) and the job's row as last read."""
        seen = None
        while True:
            try:
                process.wait(WATCH_INTERVAL_S)
                return None, seen
            except subprocess.TimeoutExpired:
                pass
            reason = None
            if lease.lost.is_set():
                reason = LEASE_LOST
            elif self.stop.is_set():
                reason = STOPPING
            else:
                seen = self.store.job(job_id)
                if seen is None or seen["cancel_requested"]:
                    reason = CANCELLED
                elif seen["time_limit_s"] is not None and used() > seen["time_limit_s"]:
                    reason = TIME_LIMIT
            if reason is not None:
                log.info("job %s: ending its process (%s)", job_id, reason)
                end_process(process)
                return reason, seen

    def _record_end(self, row: Any, files: JobFiles, process: subprocess.Popen, reason: str | None, seen: Any,
                    compute_s: float) -> None:
        job_id = row["id"]
        if reason == LEASE_LOST:
            log.warning("job %s was taken over by another worker; leaving it", job_id)
        elif reason == STOPPING:
            self.store.release(job_id, self.id, compute_s=compute_s)
        elif reason == CANCELLED:
            self.store.finish(job_id, self.id, "cancelled", stored_bytes=files.size(), compute_s=compute_s)
            log.info("job %s cancelled", job_id)
        elif reason == TIME_LIMIT:
            self.store.finish(job_id, self.id, "failed", error=time_limit_error(seen["time_limit_s"], seen),
                              failed_stage=seen["stage"], stored_bytes=files.size(), compute_s=compute_s)
            log.info("job %s stopped at its time limit", job_id)
        elif (outcome := read_outcome(files)) is None:
            ended = process_end_text(process.returncode)
            if row["attempts"] >= (row["max_attempts"] or DEFAULT_MAX_ATTEMPTS):
                self.store.finish(job_id, self.id, "failed", error=attempts_error(row["attempts"], ended),
                                  stored_bytes=files.size(), compute_s=compute_s)
            else:
                self.store.release(job_id, self.id, compute_s=compute_s, attempt_error=ended)
            log.warning("job %s: %s", job_id, ended)
        elif outcome["status"] == "done":
            self.store.finish(job_id, self.id, "done", skipped=outcome.get("skipped"), headline=outcome.get("headline"),
                              stored_bytes=files.size(), compute_s=compute_s)
            log.info("job %s done", job_id)
        else:
            self.store.finish(job_id, self.id, "failed", error=outcome.get("error"), failed_stage=outcome.get("stage"),
                              stored_bytes=files.size(), compute_s=compute_s)
            log.info("job %s failed: %s", job_id, outcome.get("error"))


def end_process(process: subprocess.Popen, grace_s: float = END_GRACE_S) -> None:
    """End a job's process and what it started (its session): SIGTERM, then SIGKILL after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # not a group leader after all: the process alone
            process.send_signal(sig)
        try:
            process.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait()
