"""``medrobust demo`` ends its summary with the report's link and how to run it on one's own
model (the run itself is the demo configuration; its figures are in the README)."""

from __future__ import annotations

from typer.testing import CliRunner

from medrobust.cli import app


def test_demo_closes_with_how_to_run_it_on_your_own_model(monkeypatch) -> None:
    import medrobust.cli.evaluate as evaluate

    seen = {}

    def fake_run(config, restart=False, closing=None, **options):
        seen.update(config=config, closing=closing)

    monkeypatch.setattr(evaluate, "run_experiment", fake_run)
    result = CliRunner().invoke(app, ["demo", "--quick", "--output-dir", "elsewhere"])
    assert result.exit_code == 0, result.output
    assert seen["config"].name == "demo-quick" and seen["config"].output_dir == "elsewhere"
    closing = seen["closing"]
    assert closing.startswith("On your own model: medrobust evaluate --model ") and "--data " in closing
