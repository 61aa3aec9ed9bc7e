"""The README's Python tour runs as written, and says what it claims."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def _tour() -> str:
    text = README.read_text()
    section = text[text.index("### Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_tour_imports_medrobust_once_plus_the_re_exported_classes() -> None:
    imports = [line for line in _tour().splitlines() if re.match(r"\s*(import|from) ", line)]
    assert imports == ["import medrobust as mr", "from medrobust.attacks import PGD",
                       "from medrobust.defenses import DefendedClassifier, build_defense"]


def test_the_python_tour_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_tour(), str(README), "exec"), scope)  # noqa: S102 — the project's own README
    x, x_adv = scope["x"], scope["x_adv"]
    assert x.shape == (36, 1, 32, 32) and x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    trained = scope["trained"]
    assert len(trained.history) == 5 and 0.0 <= trained.test_accuracy <= 1.0 and trained.n_test == 36
    assert scope["result"].success.n_images == 36
    assert scope["x_def"].shape == x.shape and len(scope["verdicts"]) == 36
    answers = scope["answers"]
    assert len(answers) == 36 and sum(answers.counts().values()) == 36
    assert scope["guard"].describe()["detectors"][0]["calibration"]["n_images"] == 36
    assert float((scope["x_adaptive"] - x).abs().max()) <= 8 / 255 + 1e-6
    assert torch.equal(torch.as_tensor(scope["predictions"].labels.shape), torch.tensor([36]))
    metrics = scope["metrics"]
    assert {a.key for a in metrics.attacks} == {"apgd@8/255", "sia@8/255"}
    assert (tmp_path / "runs" / "tour" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "tour-model" / "model.json").is_file()
