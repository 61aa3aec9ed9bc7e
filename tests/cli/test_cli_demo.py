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


def test_the_own_model_command_it_suggests_runs_as_typed(tmp_path, monkeypatch) -> None:
    """The suggested command, its model a real file, gets past every option and the model's load:
    what it complains of is the empty image folder, which the user fills."""
    import torch

    from medrobust.cli.demo import OWN_MODEL_SENTENCE

    command = OWN_MODEL_SENTENCE.split("medrobust ", 1)[1].split(" (", 1)[0].split()
    monkeypatch.chdir(tmp_path)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))
    net(torch.zeros(1, 1, 16, 16))
    torch.jit.trace(net.eval(), torch.zeros(1, 1, 16, 16)).save("MODEL.pt")
    command[command.index("MODEL.onnx")] = "MODEL.pt"
    (tmp_path / "IMAGES" / "Normal").mkdir(parents=True)
    result = CliRunner().invoke(app, [*command, "--input-size", "16"])
    assert result.exit_code != 0
    assert "intensity" not in result.output.lower() and "IMAGES" in result.output
