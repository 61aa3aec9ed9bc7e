"""A running job's progress as the API shows it (issue 25, progress): the job's process writes a
stage's count right after its first batch, however fast that batch was, so the ETA is known
from then on; the ETA is the stage's rate so far."""

from __future__ import annotations

import time

import pytest

from medrobust.service.job_process import JobProgress
from medrobust.service.job_view import job_json, stage_eta
from medrobust.service.store import Store


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[str, int, int, int]] = []

    def set_progress(self, job_id, worker_id, *, stage, done, total, stage_started, stages_finished) -> None:
        self.writes.append((stage, done, total, stages_finished))


def test_a_stage_is_written_at_its_start_after_its_first_batch_and_at_its_end():
    store = _Recorder()
    progress = JobProgress(store, "job", "worker")  # type: ignore[arg-type]
    with progress.stage("attack pgd", 40) as bar:
        for _ in range(4):
            bar.advance(10)  # four quick batches: only the first is written at once
    assert store.writes == [("attack pgd", 0, 40, 0), ("attack pgd", 10, 40, 0), ("attack pgd", 40, 40, 1)]
    assert progress.current is None


def test_a_failing_stage_stays_the_current_one():
    progress = JobProgress(_Recorder(), "job", "worker")  # type: ignore[arg-type]
    with pytest.raises(ValueError), progress.stage("model check", 1):
        raise ValueError("the model failed on a blank image")
    assert progress.current == "model check" and progress.stages_finished == 0


@pytest.mark.parametrize("done, total, elapsed, eta", [
    (10, 40, 20.0, 60.0),  # 10 images in 20 s: 30 more take 60 s
    (0, 40, 20.0, None),  # no batch done yet: no rate
    (40, 40, 20.0, None),  # finished
    (48, 40, 20.0, None),  # a count past its total says nothing
    (10, 0, 20.0, None),
])
def test_the_eta_is_the_stage_rate_so_far(done, total, elapsed, eta):
    now = 1_000_000.0
    assert stage_eta(done, total, now - elapsed, now) == eta


def test_a_running_job_shows_its_eta_after_the_first_batch(tmp_path):
    store = Store(tmp_path / "service")
    tenant = store.tenant_for_token(store.create_token("acme"))
    store.add_job("00112233aabbccdd", tenant, {"model_file": "m.pt"}, 0, 5)
    store.claim("w", lease_s=60)
    started = time.time() - 30
    store.set_progress("00112233aabbccdd", "w", stage="baseline", done=0, total=60, stage_started=started,
                       stages_finished=1)
    assert job_json(store.job("00112233aabbccdd"), now=started + 30)["eta_seconds"] is None
    store.set_progress("00112233aabbccdd", "w", stage="baseline", done=20, total=60, stage_started=started,
                       stages_finished=1)
    job = job_json(store.job("00112233aabbccdd"), now=started + 30)
    assert job["eta_seconds"] == 60.0 and job["fraction"] == pytest.approx(1 / 3) and job["stage"] == "baseline"
