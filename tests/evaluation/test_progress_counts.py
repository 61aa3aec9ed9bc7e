"""Progress counts images: no stage ever reports more done than its total (a defense stage used
to read "32/16" while its adaptive portfolio ran several attacks under one bar)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

import medrobust as mr

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


class Recorder:
    def __init__(self) -> None:
        self.stages: list[list] = []  # [name, total, done]

    @contextmanager
    def _stage(self, record: list):
        class Bar:
            def advance(self, n: int = 1) -> None:
                record[2] += n

        yield Bar()

    def stage(self, name: str, total: int):
        record = [name, total, 0]
        self.stages.append(record)
        return self._stage(record)


def test_every_stage_counts_up_to_its_total_and_no_further(tmp_path) -> None:
    from medrobust.models import build_classifier

    torch.manual_seed(0)
    net = build_classifier("small-cnn", CLASSES, 32)
    x, y = torch.rand(9, 1, 32, 32), torch.tensor([0, 1, 2] * 3)
    settings = {"attacks": [{"name": "pgd", "params": {"eps": "4/255", "steps": 2}, "eps_sweep": ["2/255", "4/255"]}],
                "defenses": ["jpeg+tv"], "detectors": {}, "attack_images": 9, "data": {"size": 32}, "batch_size": 4,
                "adaptive": {"portfolio": ["unrolled", "square", "transfer"], "params": {"steps": 2}, "max_steps": 4,
                             "square_queries": 5, "eps_sweep": ["2/255", "4/255"], "masking_eps": None}}
    recorder = Recorder()
    mr.evaluate(net, (x, y), settings, run_dir=tmp_path / "run", progress=recorder)
    assert recorder.stages
    assert all(done == total for _, total, done in recorder.stages), recorder.stages
    adaptive = [name for name, _, _ in recorder.stages if name.startswith("defense jpeg+tv:")]
    assert len(adaptive) >= 4  # unrolled 2 and 4 steps, square, then the 2/255 budget's runs: one bar each
    assert any("@2/255" in name for name in adaptive)
