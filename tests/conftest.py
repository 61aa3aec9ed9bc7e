"""Shared test configuration: hypothesis profiles, the slow/gpu markers, and small CNNs trained
on phantoms (a few seconds each) for the attack, defense and CLI tests."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, settings

from medrobust.data.phantom import PhantomDataset
from medrobust.models.augment import AugmentConfig
from medrobust.models.classifier import Classifier, InputContract
from medrobust.models.training import TrainConfig, train_classifier
from medrobust.models.zoo import build_classifier

settings.register_profile("default", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def _train_small_cnn(splits, classes, seed: int):
    torch.manual_seed(seed)
    model = build_classifier("small-cnn", classes, 32)
    config = TrainConfig(epochs=20, batch_size=32, lr=3e-3, seed=seed, augment=AugmentConfig(True, 0, 0, 0, 0),
                         early_stopping_patience=20)
    train_classifier(model, splits["train"], splits["val"], config)
    return model.eval()


@pytest.fixture(scope="session")
def phantom32():
    """Phantoms at 32 px: {"train"|"val"|"test": (x, y)} and the class names."""
    ds = PhantomDataset(per_class=150, size=32, seed=11)
    return {name: part.load()[:2] for name, part in ds.splits().items()}, ds.classes


@pytest.fixture(scope="session")
def trained_small_cnn(phantom32):
    """A small CNN at about 80% test accuracy on 32 px phantoms."""
    splits, classes = phantom32
    return _train_small_cnn(splits, classes, seed=0)


@pytest.fixture(scope="session")
def second_small_cnn(phantom32):
    """An independently trained second small CNN (another seed), for transfer tests."""
    splits, classes = phantom32
    return _train_small_cnn(splits, classes, seed=1)


@pytest.fixture(scope="session")
def linear_classifier():
    """A factory of tiny linear Classifiers on 8 x 8 images: ``linear_classifier(seed, classes=...,
    kind="softmax" | "binary" | "multilabel")``."""

    def make(seed: int, classes=("Normal", "Pneumonia", "Pneumothorax"), kind: str = "softmax",
             size: int = 8) -> Classifier:
        torch.manual_seed(seed)
        n_out = 1 if kind == "binary" else len(classes)
        net = nn.Sequential(nn.Flatten(), nn.Linear(size * size, n_out))
        contract = InputContract(classes=tuple(classes), network_channels=1, intensity="unit", output_kind=kind)
        return Classifier(net, contract).eval()

    return make


@pytest.fixture(scope="session")
def ray_cluster():
    """The address of a 2-CPU Ray cluster on this machine (tests/ray_cluster.py), started on
    first use and stopped at the end of the session; skipped when Ray is not installed."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'medrobust[scale]' (CI installs it)")
    from tests.ray_cluster import local_ray_cluster

    yield from local_ray_cluster()


@pytest.fixture(scope="session")
def golden_checkpoint(tmp_path_factory):
    """The golden runs' model (tests/golden.py): a small CNN trained on one thread."""
    from tests.golden import golden_checkpoint as train

    return train(tmp_path_factory.mktemp("golden-model"))


@pytest.fixture(scope="session")
def golden_full_run(golden_checkpoint, tmp_path_factory):
    """The golden ``full_config`` run, local, on one thread (tests/golden.py)."""
    from tests.golden import run_full_config

    return run_full_config(tmp_path_factory.mktemp("golden-full"), golden_checkpoint)
