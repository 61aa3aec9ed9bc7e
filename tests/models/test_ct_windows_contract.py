"""CT windows and percentile normalisation in the model contract (issue 29): known answers of the
window (a voxel at L - W/2 gives 0, at L + W/2 gives 1, zero gradient outside), per-image
percentiles against numpy, and one parser behind every face (Python, config, the command line's
``--window``, the service's form)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.cli.app import contract_from_options
from medrobust.data.stored_grid import CT_HU
from medrobust.evaluation.config import validate_config
from medrobust.models.classifier import Classifier, InputContract
from medrobust.models.contract import ModelContract
from medrobust.models.intensity import HUWindows, PercentileNormalization, parse_intensity
from medrobust.service.submission import SubmissionRefused, _contract

BRAIN_SUBDURAL_BONE = [[40, 80], [80, 200], [600, 2800]]
CANONICAL = "hu_windows:40,80;80,200;600,2800"


def _hu(values: list[float]) -> torch.Tensor:
    """Stored images (1, 1, 1, N) in the currency holding these HU."""
    return CT_HU.from_units(torch.tensor(values, dtype=torch.float64)).view(1, 1, 1, -1)


def test_a_window_maps_its_lower_edge_to_0_its_upper_edge_to_1_and_clips():
    windows = parse_intensity({"hu_windows": BRAIN_SUBDURAL_BONE})
    assert isinstance(windows, HUWindows) and windows.channels == 3 and windows.value == CANONICAL
    # per window: L - W/2, L, L + W/2, far below, far above
    for channel, (level, width) in enumerate(BRAIN_SUBDURAL_BONE):
        out = windows.apply(_hu([level - width / 2, level, level + width / 2, -1024, 3071]))[0, channel, 0]
        assert out.tolist() == pytest.approx([0.0, 0.5, 1.0, 0.0, 1.0], abs=1e-9)
    # 0 HU in the brain window 40/80 is its lower edge; 20 HU is a quarter
    assert windows.apply(_hu([20.0]))[0, 0].item() == pytest.approx(0.25)


def test_the_gradient_is_zero_outside_the_window_and_one_over_the_width_inside():
    x = _hu([-500.0, 30.0, 500.0]).requires_grad_(True)
    HUWindows(((40.0, 80.0),)).apply(x).sum().backward()
    # d/dx of (HU - lo) / W with HU = -1024 + 4095 x: 4095 / W inside, 0 where the window clips
    assert x.grad.flatten().tolist() == pytest.approx([0.0, 4095 / 80, 0.0])


def test_windows_work_on_volumes_and_refuse_more_than_one_stored_channel():
    volume = torch.rand(2, 1, 4, 5, 6)
    assert HUWindows(((40.0, 80.0), (600.0, 2800.0))).apply(volume).shape == (2, 2, 4, 5, 6)
    with pytest.raises(ValueError, match="one channel"):
        HUWindows(((40.0, 80.0),)).apply(torch.rand(1, 3, 4, 4))


def test_percentile_normalisation_matches_numpy_per_image():
    x = torch.rand(3, 1, 9, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[2] = 0.25  # a flat image: its two percentiles are equal, so it maps to 0 (no division by zero)
    out = PercentileNormalization(1.0, 99.0).apply(x)
    for i in range(2):
        lo, hi = np.percentile(x[i].numpy(), [1, 99])
        expected = np.clip((x[i].numpy() - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-12)
    assert out[2].abs().max().item() == 0.0
    volume = torch.rand(2, 1, 3, 4, 5, requires_grad=True)
    PercentileNormalization(2.0, 98.0).apply(volume).sum().backward()
    assert volume.grad is not None and torch.isfinite(volume.grad).all()


@pytest.mark.parametrize("given", [
    {"hu_windows": BRAIN_SUBDURAL_BONE}, CANONICAL, "windows: 40,80; 80,200; 600,2800", BRAIN_SUBDURAL_BONE,
])
def test_every_form_of_the_windows_is_one_contract(given):
    contract = ModelContract(classes="normal,bleed", intensity=given)
    assert contract.intensity == CANONICAL
    assert ModelContract.model_validate(contract.declared()) == contract
    resolved = contract.resolve()
    assert (resolved.stored_channels, resolved.network_channels, resolved.intensity.value) == (1, 3, CANONICAL)
    assert InputContract.from_json(resolved.to_json()) == resolved  # model.json keeps the text


def test_percentile_forms_and_refusals_name_the_value():
    assert ModelContract(intensity={"normalize": "percentile", "low": 1, "high": 99}).intensity == "percentile:1,99"
    assert ModelContract(intensity="percentile").intensity == "percentile:1,99"
    for bad, says in [({"hu_windows": [[40, 0]]}, "width that is not positive"),
                      ("percentile:99,1", "not in order"),
                      ({"normalize": "zscore"}, "{normalize: percentile, low: 1, high: 99}"),
                      ("hu_windows:40", "is not one (level, width) pair")]:
        with pytest.raises(ValueError, match=r"^m\.onnx: ") as info:
            ModelContract.from_options({"intensity": bad}, where="m.onnx")
        assert says in str(info.value)
    with pytest.raises(ValueError, match="network channels 3: the intensity hu_windows:40,80;80,200 gives the network 2"):
        ModelContract.from_options({"intensity": "hu_windows:40,80;80,200", "channels": 3})
    assert ModelContract(intensity="hu_windows:40,80;80,200", channels=2).channels == 2  # 2 windows: 2 channels


def test_a_windowed_classifier_feeds_the_network_one_channel_per_window():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return x.mean(dim=(2, 3))

    contract = ModelContract(classes="a,b,c", intensity=CANONICAL).resolve()
    model = Classifier(Probe(), contract).eval()
    x = _hu([40.0, 2000.0]).float()
    logits = model(x)
    assert logits.shape == (1, 3) and seen[0].shape == (1, 3, 1, 2)
    assert seen[0][0, :, 0, 0].tolist() == pytest.approx([0.5, 0.3, 0.3], abs=1e-4)  # 40 HU: (40 - (L - W/2)) / W
    with pytest.raises(ValueError, match="one per window"):
        InputContract(("a", "b"), network_channels=1, intensity=CANONICAL)


def test_the_command_line_the_config_and_the_form_parse_the_windows_the_same_way():
    cli = contract_from_options(None, "a,b", windows=["40,80", "80,200", "600,2800"])
    assert cli.intensity == CANONICAL
    assert contract_from_options(None, "a,b", intensity="percentile:1,99").intensity == "percentile:1,99"
    with pytest.raises(ValueError, match="both --intensity unit and --window were given"):
        contract_from_options(None, "a,b", intensity="unit", windows=["40,80"])
    config = validate_config({"model": {"load": {"path": "vol.onnx", "classes": ["a", "b"],
                                                 "intensity": {"hu_windows": BRAIN_SUBDURAL_BONE}}}})
    assert config.model.load.contract == cli
    assert _contract({"classes": "a,b", "intensity": CANONICAL}) == cli
    with pytest.raises(SubmissionRefused, match=r"^intensity 'hu_windows:40,-5': the window \(40, -5\)"):
        _contract({"classes": "a,b", "intensity": "hu_windows:40,-5"})
