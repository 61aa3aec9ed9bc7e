"""`medrobust report RUN_DIR` through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import medrobust.cli.report  # noqa: F401  (registers the command)
from medrobust.cli.app import app

runner = CliRunner()


def test_report_command_rebuilds_report(tmp_path: Path, write_run) -> None:
    write_run(tmp_path, defenses=False, detectors=False)
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "report.html") in result.output.replace("\n", "")
    assert (tmp_path / "report.html").is_file()
    assert (tmp_path / "figures" / "01_baseline_confusion.png").is_file()


def test_report_command_without_metrics_is_one_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "metrics.json" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "not a folder" in result.output
