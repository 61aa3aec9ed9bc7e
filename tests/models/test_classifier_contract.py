"""The Classifier's input contract: channel repeat, intensity conventions, resizing, shape checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medrobust.models.classifier import Classifier, InputContract
from medrobust.models.intensity import IMAGENET_MEAN, IMAGENET_STD, Intensity


class Record(nn.Module):
    """Returns zeros and remembers what it was fed."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return torch.zeros(x.shape[0], self.k)


def test_grey_channel_is_repeated_and_imagenet_normalised() -> None:
    net = Record()
    model = Classifier(net, InputContract(classes=("a", "b", "c"), intensity="imagenet"))
    x = torch.full((1, 1, 4, 4), 0.5)
    model(x)
    assert net.seen.shape == (1, 3, 4, 4)
    for c in range(3):
        assert torch.allclose(net.seen[0, c], torch.tensor((0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))


@pytest.mark.parametrize(
    ("name", "value"), [("unit", 0.25), ("none", 0.25), ("[-1,1]", -0.5), ("symmetric", -0.5), ("[0,255]", 63.75)]
)
def test_intensity_conventions(name: str, value: float) -> None:
    assert Intensity.parse(name).apply(torch.full((1, 1, 1, 1), 0.25)).item() == pytest.approx(value)


def test_unknown_intensity_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown intensity convention"):
        Intensity.parse("hounsfield")


def test_input_is_resized_to_the_network_size_and_channels_last_is_honoured() -> None:
    net = Record()
    model = Classifier(net, InputContract(classes=("a", "b", "c"), input_size=8, network_channels=1,
                                          intensity="unit", channels_last=True))
    model(torch.rand(2, 1, 16, 16))
    assert net.seen.shape == (2, 8, 8, 1)


def test_wrong_channel_count_is_refused() -> None:
    model = Classifier(Record(), InputContract(classes=("a", "b", "c")))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, H, W\)"):
        model(torch.rand(2, 3, 8, 8))


def test_binary_model_needs_two_class_names() -> None:
    with pytest.raises(ValueError, match="two class names"):
        InputContract(classes=("Pneumonia",), output_kind="binary")


def test_contract_round_trips_through_json() -> None:
    c = InputContract(classes=("n", "p"), input_size=(32, 40), output_kind="binary", intensity="byte")
    assert InputContract.from_json(c.to_json()) == c
