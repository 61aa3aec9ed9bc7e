"""`medrobust statement RUN` and `medrobust compare RUN_A RUN_B --out FILE` through typer's CliRunner,
on synthetic run directories."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import medrobust.cli.report  # noqa: F401  (registers the commands)
from medrobust.cli.app import app
from medrobust.evaluation.results import SweepPoint, write_metrics

runner = CliRunner()


def test_statement_command_writes_and_prints_the_statement(tmp_path: Path, write_run) -> None:
    write_run(tmp_path, samples=False)
    result = runner.invoke(app, ["statement", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "statement.html") in result.output.replace("\n", "")
    html = (tmp_path / "statement.html").read_text()
    assert "Adversarial robustness statement" in html and (tmp_path / "scorecard.json").is_file()


def test_statement_command_errors_are_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["statement", str(tmp_path)])
    assert result.exit_code == 2 and "metrics.json" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["statement", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "not a folder" in result.output


def test_compare_command_writes_the_page_and_prints_differences(tmp_path: Path, write_run) -> None:
    write_run(tmp_path / "before", samples=False, history=False)
    after = write_run(tmp_path / "after", samples=False, history=False)
    after.eps_sweep = {name: [SweepPoint(eps=e / 255, accuracy=0.78 if e < 16 else 0.6) for e in (0, 1, 2, 4, 8, 16)]
                       for name in after.eps_sweep}  # sweeps that hold up; the attacks at 8/255 are unchanged
    write_metrics(after, tmp_path / "after")
    out = tmp_path / "compare.html"
    result = runner.invoke(app, ["compare", str(tmp_path / "before"), str(tmp_path / "after"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    output = result.output.replace("\n", "")
    assert str(out) in output and out.is_file()
    assert "white-box gradient attacker, accuracy at 4/255: after 78.0% vs before 46.6% (higher, beyond noise)" in output
    assert 'data-change="higher"' in out.read_text()


def test_compare_command_needs_two_runs(tmp_path: Path, write_run) -> None:
    write_run(tmp_path / "only", samples=False, history=False)
    result = runner.invoke(app, ["compare", str(tmp_path / "only"), "--out", str(tmp_path / "c.html")])
    assert result.exit_code == 2 and "at least two" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c.html").exists()
