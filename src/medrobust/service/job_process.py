"""One attempt at a job, in a process of its own that its worker can end at any moment.

The worker (:mod:`medrobust.service.worker`) starts ``python -m medrobust.service.job_process``
for each attempt and keeps what must outlive it: the job's lease, the cancel and time-limit
checks, and the job's final row. This process runs ``mr.evaluate`` and the report from the
job's upload folder, writes each stage's progress to the job's row, and ends by writing its
outcome to ``jobs/ID/attempt.json``: done (the skipped files and the scorecard's headline) or
failed (the error as the tenant reads it, and the stage it happened in).

Why a process: a batch that never returns (a model whose forward loops for ever, a
configuration of a billion steps) cannot be interrupted from inside Python, but a process can
be ended. Ending it loses nothing finished: the runner writes each batch atomically and the
next attempt resumes from the run folder. The process also ends itself within a second when
its worker is gone (SIGKILLed), so that no orphan writes to a run folder that another worker
has taken over.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import traceback
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Any

from medrobust import ModelContract
from medrobust.files.atomic_files import open_atomic
from medrobust.service.job_files import JobFiles, job_files
from medrobust.service.store import Store

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 0.5
CLASS_SETTINGS = ("normal_class", "class_map")
"""How the images' classes read against the model's: the request's own fields (a job queued by an
earlier version holds them in its ``contract``)."""
PARENT_CHECK_INTERVAL_S = 0.5


class JobProgress:
    """The public layer's progress protocol, written to the job's row: the stage, its count and
    its start time, at most twice a second, and always at a stage's start, after its first batch
    (so that an ETA is known from then on) and at its end. :attr:`current` is the stage the run
    is in (it stays set when a stage fails, so the error can say where)."""

    def __init__(self, store: Store, job_id: str, worker_id: str) -> None:
        self.store, self.job_id, self.worker_id = store, job_id, worker_id
        self.stages_finished = 0
        self.current: str | None = None
        self._last_write = 0.0

    @contextmanager
    def stage(self, name: str, total: int):  # noqa: ANN201  (a context manager)
        bar = _StageBar(self, name, total)
        self.current = name
        bar.write(force=True)
        yield bar
        self.stages_finished += 1
        self.current = None
        bar.write(force=True)


class _StageBar:
    def __init__(self, owner: JobProgress, name: str, total: int) -> None:
        self.owner, self.name, self.total, self.done = owner, name, max(int(total), 0), 0
        self.started = time.time()

    def advance(self, n: int = 1) -> None:
        first = self.done == 0
        self.done += n
        self.write(force=first)

    def write(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.owner._last_write < PROGRESS_WRITE_INTERVAL_S:
            return
        self.owner._last_write = now
        self.owner.store.set_progress(self.owner.job_id, self.owner.worker_id, stage=self.name, done=self.done,
                                      total=self.total, stage_started=self.started,
                                      stages_finished=self.owner.stages_finished)


def job_arguments(request: dict[str, Any], files: JobFiles) -> dict[str, Any]:
    """``mr.evaluate``'s arguments for a job's request (as the web process stored it). The model
    and images are named relative to the job's upload folder, where the job runs, so that what
    the run records (config.yaml, metrics, report, skipped files) names the uploaded files, not
    the server's folders."""
    declared = dict(request.get("contract") or {})
    settings = {key: declared.pop(key, None) for key in CLASS_SETTINGS}  # a job queued before they moved out
    declared.pop("trust_pickle", None)  # the service never unpickles an upload, whatever a job record says
    contract = ModelContract.model_validate(declared)
    arguments: dict[str, Any] = {
        "model": request["model_path"],  # relative to the upload folder, the job's working directory
        "images": request["images_path"],
        "preset": request.get("config") or request.get("preset") or "quick",
        "run_dir": Path("..") / files.run_name,  # beside the upload folder; recorded as output_dir ".."
        "contract": contract,
    }
    for key in CLASS_SETTINGS:
        value = request.get(key) or settings[key]
        if value:
            arguments[key] = value
    for key, field in (("title", "name"), ("model_version", "model_version")):
        if request.get(field):
            arguments[key] = request[field]
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


def run_attempt(data_dir: Path, job_id: str, worker_id: str, *, device: str | None = None,
                execution: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the job's evaluation and report; its outcome as :func:`write_outcome` stores it."""
    store = Store(data_dir)
    row = store.job(job_id)
    if row is None:
        return {"status": "failed", "error": "the job was deleted"}
    files = job_files(data_dir, row)
    request = json.loads(row["request"])
    progress = JobProgress(store, job_id, worker_id)
    try:
        arguments = job_arguments(request, files)
        if device:
            arguments["device"] = device
        if execution:
            arguments["execution"] = execution
        with chdir(files.upload):
            metrics = _evaluate_and_report(arguments, progress)
    except Exception as err:  # the job fails, with the message the tenant reads
        files.root.mkdir(parents=True, exist_ok=True)
        with files.log.open("a", encoding="utf-8") as out:
            out.write(traceback.format_exc())
        message = user_message(err, files, request)
        log.warning("job %s failed: %s", job_id, message)
        return {"status": "failed", "error": message, "stage": progress.current}
    return {"status": "done", "skipped": [str(s) for s in (metrics.data.get("skipped") or [])],
            "headline": headline(files.run)}


def _evaluate_and_report(arguments: dict[str, Any], progress: JobProgress):
    """Run the evaluation, then write report.html, statement.html and scorecard.json."""
    import medrobust as mr
    from medrobust.report import build_report

    metrics = mr.evaluate(progress=progress, **arguments)
    build_report(Path(arguments["run_dir"]))
    return metrics


def write_outcome(files: JobFiles, outcome: dict[str, Any]) -> None:
    with open_atomic(files.attempt_outcome) as out:
        out.write(json.dumps(outcome).encode("utf-8"))


def read_outcome(files: JobFiles) -> dict[str, Any] | None:
    """The outcome the job's process wrote; None when it wrote none (it was ended, or it crashed)."""
    try:
        outcome = json.loads(files.attempt_outcome.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return outcome if isinstance(outcome, dict) and outcome.get("status") in ("done", "failed") else None


def end_with_parent(parent_pid: int) -> None:
    """End this process at once when the process ``parent_pid`` (its worker) is gone."""
    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_INTERVAL_S)
            if os.getppid() != parent_pid:
                os._exit(75)  # no clean-up: the run folder is another worker's from now on

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medrobust.service.job_process", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--device")
    parser.add_argument("--execution", help="the execution section, as JSON")
    args = parser.parse_args(argv)
    end_with_parent(args.parent)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s job %(process)d %(levelname)s %(message)s")
    data_dir = args.data_dir.resolve()
    outcome = run_attempt(data_dir, args.job, args.worker, device=args.device,
                          execution=json.loads(args.execution) if args.execution else None)
    row = Store(data_dir).job(args.job)
    if row is not None:
        write_outcome(job_files(data_dir, row), outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
