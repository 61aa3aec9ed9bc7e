"""A run interrupted while training its model resumes the training at the next epoch (from the
epoch checkpoint in RUN/model/training/, removed once the model is saved) and trains exactly the
model an uninterrupted run trains (one thread)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

import medrobust as mr

CONFIG = {
    "device": "cpu",
    "batch_size": 8,
    "attack_images": 6,
    "data": {"source": "phantom", "size": 32, "per_class": 16, "phantom_seed": 11},
    "model": {"train": {"arch": "small-cnn", "epochs": 4, "lr": 0.003}},
    "attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 2}}],
    "defenses": [],
    "adaptive": {"enabled": False},
    "detectors": {"reference": {"enabled": False}, "squeeze": {"enabled": False}},
}


class Stopped(Exception):
    """Raised by the progress below to end a run once training is done (the test's end)."""


class Recording:
    """Records each stage's reports; a Ctrl-C (KeyboardInterrupt) after ``interrupt_after``
    epochs of training; :class:`Stopped` when the baseline stage starts."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.events: dict[str, list[tuple[str, int]]] = {}
        self.interrupt_after = interrupt_after

    def stage(self, name: str, total: int):
        if name == "baseline":
            raise Stopped
        events = self.events.setdefault(name, [])
        limit = self.interrupt_after if name == "train model" else None

        class Stage:
            def advance(self, n: int = 1) -> None:
                events.append(("advance", n))
                if limit is not None and len(events) == limit:
                    raise KeyboardInterrupt

            def resumed(self, n: int) -> None:
                events.append(("resumed", n))

        @contextmanager
        def ctx():
            yield Stage()

        return ctx()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(tmp_path, name: str, progress: Recording) -> None:
    mr.evaluate(preset={**CONFIG, "name": name, "output_dir": str(tmp_path)}, progress=progress)


def test_an_interrupted_run_resumes_training_at_the_next_epoch(tmp_path, one_thread) -> None:
    run = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "resumed", Recording(interrupt_after=2))
    assert (run / "model" / "training" / "epoch.pt").is_file()
    assert not (run / "model" / "model.json").exists()

    again = Recording()
    with pytest.raises(Stopped):
        _run(tmp_path, "resumed", again)
    assert again.events["train model"] == [("resumed", 2), ("advance", 1), ("advance", 1)]
    assert (run / "model" / "model.json").is_file() and not (run / "model" / "training").exists()

    with pytest.raises(Stopped):
        _run(tmp_path, "whole", Recording())
    whole = tmp_path / "whole" / "model" / "model.safetensors"
    assert (run / "model" / "model.safetensors").read_bytes() == whole.read_bytes()
