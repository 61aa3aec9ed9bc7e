"""Ctrl-C: a command stops with exit status 130 and one line saying it was interrupted, what was
kept and the command that resumes it (the one typed, without --restart)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

import pytest
import yaml
from typer.testing import CliRunner

from medrobust.cli import app

TINY_RUN = {
    "name": "interrupted",
    "device": "cpu",
    "batch_size": 8,
    "attack_images": 6,
    "data": {"source": "phantom", "size": 32, "per_class": 20, "phantom_seed": 11},
    "model": {"train": {"arch": "small-cnn", "epochs": 30, "lr": 0.003}},
    "attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 200}}],
    "defenses": [],
    "adaptive": {"enabled": False},
    "detectors": {"reference": {"enabled": False}, "squeeze": {"enabled": False}},
}


def _default_sigint() -> None:
    """In the child: SIGINT as a terminal delivers it (a test run in the background, without job
    control, starts its children with SIGINT ignored, and Python then installs no handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line.rstrip("\n"))
    out.put(None)


def test_ctrl_c_on_evaluate_says_how_to_resume_and_exits_130(tmp_path) -> None:
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump({**TINY_RUN, "output_dir": str(tmp_path / "runs")}))
    proc = subprocess.Popen([sys.executable, "-m", "medrobust", "evaluate", str(config), "--restart"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    try:
        stdout: queue.Queue = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, stdout), daemon=True).start()
        seen = []
        # stdout is a pipe, so progress comes as plain lines: wait (each line within a generous
        # limit, no fixed total) until the run is training, then press Ctrl-C
        while not any(line.startswith("stage train model: started") for line in seen):
            line = stdout.get(timeout=120)
            assert line is not None, f"the run ended before training started: {seen}"
            seen.append(line)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last == ("interrupted: finished batches and training epochs are kept in the run folder; resume with: "
                    f"medrobust evaluate {config}"), stderr  # --restart left out: it would delete them
    assert "Traceback" not in stderr and "error:" not in stderr
    assert (tmp_path / "runs" / "interrupted" / "config.yaml").is_file()


@pytest.fixture
def typed(monkeypatch):
    """Pretend the user typed ``medrobust ARGS`` (what the message repeats)."""

    def set_argv(*args: str) -> list[str]:
        monkeypatch.setattr(sys, "argv", ["medrobust", *args])
        return list(args)

    return set_argv


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_on_demo_says_the_same_command_resumes(monkeypatch, typed) -> None:
    import medrobust.cli.evaluate as evaluate

    monkeypatch.setattr(evaluate, "run_experiment", _interrupt)
    result = CliRunner().invoke(app, typed("demo", "--quick"))
    assert result.exit_code == 130
    assert result.stderr.strip() == ("interrupted: finished batches and training epochs are kept in the run folder; "
                                     "resume with: medrobust demo --quick")


def test_ctrl_c_on_train_says_the_last_epoch_is_kept(monkeypatch, typed, tmp_path) -> None:
    import medrobust as mr

    monkeypatch.setattr(mr, "train", _interrupt)
    out = tmp_path / "model"
    result = CliRunner().invoke(app, typed("train", "--arch", "small-cnn", "--out", str(out)))
    assert result.exit_code == 130
    assert result.stderr.strip() == (f"interrupted: the last finished epoch is kept in {out}; the same command resumes "
                                     f"training from it: medrobust train --arch small-cnn --out {out}")


def test_ctrl_c_on_attack_says_it_does_not_resume(monkeypatch, typed, tmp_path) -> None:
    import medrobust as mr

    monkeypatch.setattr(mr, "attack", _interrupt)  # the command's work: loading, then attacking
    out = tmp_path / "adv"
    result = CliRunner().invoke(app, typed("attack", "--model", "m.pt", "--data", "phantom", "--out", str(out)))
    assert result.exit_code == 130
    assert result.stderr.strip() == (f"interrupted: medrobust attack does not resume; the images written so far stay "
                                     f"in {out}: run the command again to attack every image")


def test_ctrl_c_on_another_command_says_interrupted(monkeypatch, typed) -> None:
    import medrobust.cli.models as models

    monkeypatch.setattr(models, "load_cli_model", _interrupt)
    result = CliRunner().invoke(app, typed("predict", "--model", "m.pt", "x.png"))
    assert result.exit_code == 130 and result.stderr.strip() == "interrupted"


def test_the_resume_command_is_shell_quoted(monkeypatch, typed) -> None:
    from medrobust.cli.app import same_command

    typed("evaluate", "my runs/a b.yaml", "--restart")
    assert same_command(drop=("--restart",)) == "medrobust evaluate 'my runs/a b.yaml'"
