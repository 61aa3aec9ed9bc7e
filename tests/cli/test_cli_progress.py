"""The command line's progress: plain lines when stdout is not a terminal (a line per stage start
and finish, and per tenth of a long stage), the estimated time left after a stage's first batch
in both displays, and work an earlier run finished counted but not timed."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from medrobust.cli.progress import CliProgress, time_left_text
from medrobust.execution.resumable_stage import DRIVER, run_stage


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=200, soft_wrap=True), out


def test_a_piped_stage_prints_its_start_estimate_tenths_and_finish() -> None:
    console, out = _console(terminal=False)
    clock = Clock()
    progress = CliProgress(console=console, clock=clock)
    assert progress.plain
    with progress, progress.stage("baseline", 100) as bar:
        for _ in range(10):  # 10 s per batch of 10 images
            clock.t += 10
            bar.advance(10)
    assert out.getvalue().splitlines() == [
        "stage baseline: started, 100 to do",
        "stage baseline: about 2 min left",  # after the first batch: 90 s
        # a count line at a tenth, at most one every 30 s
        "stage baseline: 40/100 (40%), 0:40 elapsed, about 1 min left",
        "stage baseline: 70/100 (70%), 1:10 elapsed, less than a minute left",
        "stage baseline: finished, 100/100 in 1:40",
    ]


def test_a_short_stage_prints_only_its_start_and_finish() -> None:
    console, out = _console(terminal=False)
    clock = Clock()
    with CliProgress(console=console, clock=clock) as progress, progress.stage("predict", 50) as bar:
        for _ in range(5):
            clock.t += 1
            bar.advance(10)
    assert out.getvalue().splitlines() == ["stage predict: started, 50 to do", "stage predict: finished, 50/50 in 0:05"]


def test_work_an_earlier_run_finished_is_counted_but_not_timed() -> None:
    console, out = _console(terminal=False)
    clock = Clock()
    with CliProgress(console=console, clock=clock) as progress, progress.stage("attack pgd@8/255", 100) as bar:
        for _ in range(4):  # read back from disk at once
            bar.resumed(10)
        clock.t += 30
        bar.advance(10)  # 30 s for 10 images: 50 left take 150 s
        clock.t += 150
        bar.advance(50)
    assert out.getvalue().splitlines() == [
        "stage attack pgd@8/255: started, 100 to do",
        "stage attack pgd@8/255: 40/100 done by an earlier run",
        "stage attack pgd@8/255: about 2 min left",
        "stage attack pgd@8/255: finished, 100/100 in 3:00",
    ]


def test_the_terminal_bar_states_the_estimate_after_the_first_batch() -> None:
    console, out = _console(terminal=True)
    clock = Clock()
    progress = CliProgress(console=console, clock=clock)
    assert not progress.plain
    with progress, progress.stage("defense jpeg+tv", 1000) as bar:
        clock.t += 6
        bar.advance(10)  # 6 s per 10 images: 990 left take 594 s
        clock.t += 6
        bar.advance(10)
    text = out.getvalue()
    assert text.count("stage defense jpeg+tv: about 10 min left") == 1
    assert "started" not in text  # the bar itself shows the count


def test_the_estimate_reads_in_minutes_hours_or_days() -> None:
    assert time_left_text(59) == "less than a minute left"
    assert time_left_text(600) == "about 10 min left"
    assert time_left_text(5 * 3600) == "about 5.0 h left"
    assert time_left_text(30 * 3600) == "about 30 h left"
    assert time_left_text(1e9 / 100) == "about 116 days left"


def test_resumed_work_is_said_with_the_first_new_batch_even_for_a_short_stage() -> None:
    console, out = _console(terminal=False)
    clock = Clock()
    with CliProgress(console=console, clock=clock) as progress, progress.stage("train model", 8) as bar:
        bar.resumed(5)
        clock.t += 10
        bar.advance(1)
        assert out.getvalue().splitlines()[-1] == "stage train model: 5/8 done by an earlier run"
        clock.t += 20
        bar.advance(2)
    assert out.getvalue().splitlines()[-1] == "stage train model: finished, 8/8 in 0:30"


def test_no_display_when_disabled() -> None:
    console, out = _console(terminal=False)
    with CliProgress(enabled=False, console=console) as progress, progress.stage("x", 10) as bar:
        bar.advance(10)
    assert out.getvalue() == ""


class _Stage:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def advance(self, n: int = 1) -> None:
        self.events.append(("advance", n))

    def resumed(self, n: int) -> None:
        self.events.append(("resumed", n))


def test_a_resumed_stage_reports_its_stored_batches_as_resumed(tmp_path) -> None:
    def unit(b: int, sl: slice) -> dict[str, np.ndarray]:
        return {"pred": np.arange(sl.start, sl.stop)}

    first = _Stage()
    run_stage(DRIVER, tmp_path / "stage", 10, 4, unit, first.advance)
    assert first.events == [("advance", 4), ("advance", 4), ("advance", 2)]
    (tmp_path / "stage" / "batch-0002.npz").unlink()  # the last batch was not finished
    again = _Stage()
    run_stage(DRIVER, tmp_path / "stage", 10, 4, unit, again.advance)
    assert again.events == [("resumed", 4), ("resumed", 4), ("advance", 2)]
