"""The runner streams: the test split is never read whole, each read is one batch, adversarial
images stay in their batch files, and a file that cannot be read is skipped without losing
the batch's other images (also when the run is resumed). Peak memory against the test set's
size is measured by benchmarks/bench_memory.py."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medrobust.data.dataset import ImageDataset
from medrobust.evaluation.config import ExperimentConfig
from medrobust.evaluation.runner import run_experiment
from medrobust.models.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(trained_small_cnn, tmp_path_factory):
    return save_checkpoint(trained_small_cnn.cpu(), tmp_path_factory.mktemp("stream") / "model")


def _config(tmp_path, checkpoint, source: str, batch_size: int = 7) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "run", "output_dir": str(tmp_path), "batch_size": batch_size, "attack_images": 12, "device": "cpu",
        "data": {"source": source, "size": 32, "split": "test"}, "model": {"load": {"path": str(checkpoint)}},
        "attacks": [{"name": "fgsm", "params": {"eps": "8/255"}}], "defenses": ["jpeg"],
        "detectors": {"reference": {}, "squeeze": {}},
    })


def test_the_test_split_is_read_one_batch_at_a_time(tmp_path, checkpoint, monkeypatch) -> None:
    reads: list[int] = []
    original = ImageDataset.read_batch

    def counted(self, indices):
        indices = list(indices)
        reads.append(len(indices))
        return original(self, indices)

    def refused(self, batch_size=64):
        raise AssertionError("the runner read a whole split into memory")

    monkeypatch.setattr(ImageDataset, "read_batch", counted)
    monkeypatch.setattr(ImageDataset, "load", refused)
    metrics = run_experiment(_config(tmp_path, checkpoint, "phantom:per_class=15"))
    assert metrics.data["tested"] == 45 and metrics.data["attack_images"] == 12
    assert max(reads) <= 7  # batch_size
    assert sum(reads) == 45 + 12  # every test image once (baseline), the attack subset once (inputs)
    # the adversarial images are in the stage's batch files only, 8-bit
    stage = sorted((tmp_path / "run" / "stages" / "attacks" / "fgsm_8_255").glob("batch-*.npz"))
    assert len(stage) == 2  # 12 images in batches of 7
    with np.load(stage[0]) as data:
        assert data["x_adv"].dtype == np.uint8 and data["x_adv"].shape == (7, 32, 32)


def test_an_unreadable_file_loses_only_itself_also_on_resume(tmp_path, checkpoint) -> None:
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("Normal", "Pneumonia", "Pneumothorax"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(root / cls / f"{i}.png")
    (root / "Pneumonia" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    config = _config(tmp_path / "runs", checkpoint, str(root))
    first = run_experiment(config)
    assert first.data["tested"] == 17
    assert len(first.data["skipped"]) == 1 and "3.png" in first.data["skipped"][0]
    (tmp_path / "runs" / "run" / "metrics.json").unlink()  # resume: every batch file is found and reused
    again = run_experiment(config)
    assert again.data["tested"] == 17 and len(again.data["skipped"]) == 1 and "3.png" in again.data["skipped"][0]
    assert again.baseline.accuracy == first.baseline.accuracy
