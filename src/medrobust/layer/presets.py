"""The three evaluation presets of ``mr.evaluate`` / ``medrobust evaluate --preset``: what each
runs, written out as the experiment configuration it resolves to (``RUN/config.yaml``).

``quick``     PGD (10 steps) and SIA (N = 5 transformed copies, T = 10) at 8/255 white-box;
              JPEG+TV against the non-adaptive attacks and against an adaptive PGD (BPDA);
              the reference and squeeze detectors.
``standard``  adds MI-FGSM, epsilon sweeps 1, 2, 4, 8, 16/255 for PGD and 2, 4, 8/255 for SIA,
              SIA with N = 10, and, when a training folder is given, a transfer attack from a
              small CNN surrogate trained on it.
``thorough``  the study's SIA settings (N = 20, T = 10; Wang et al. 2023's defaults) with a
              1-16/255 sweep; every defense (JPEG+TV, JPEG, TV, Guo et al.'s randomised TVM,
              bit depth, median), each against an adaptive attacker that averages over the
              defense's randomness (EOT, 10 draws) where it is randomised.

A black-box model (ONNX: no gradients) cannot be attacked white-box: every preset then runs the
query-based Square attack (Andriushchenko et al. 2020; 300 / 1000 / 5000 queries) instead of the
gradient attacks, also as the adaptive attacker against each defense (it queries the defended
model), plus the transfer attack from a surrogate when a training folder is given.
"""

from __future__ import annotations

from typing import Any

PRESETS = ("quick", "standard", "thorough")

_SWEEP_FULL = ["1/255", "2/255", "4/255", "8/255", "16/255"]
_ALL_DEFENSES = ["jpeg+tv", "jpeg", "tv", "tvm", "bits:bits=5", "median:size=3"]
_SQUARE_QUERIES = {"quick": 300, "standard": 1000, "thorough": 5000}


def preset_settings(preset: str, *, differentiable: bool = True, train_data: str | None = None) -> dict[str, Any]:
    """The configuration sections (attacks, defenses, adaptive, detectors, surrogates,
    attack_images) that ``preset`` runs; see the module docstring."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    transfer = train_data is not None and preset != "quick"
    if differentiable:
        attacks: list[dict[str, Any]] = [
            {"name": "pgd", "params": {"eps": "8/255", "steps": 10},
             "eps_sweep": _SWEEP_FULL if preset != "quick" else [], "transfer": transfer},
            {"name": "sia", "params": {"eps": "8/255", "n_copies": {"quick": 5, "standard": 10, "thorough": 20}[preset],
                                       "steps": 10},
             "eps_sweep": {"quick": [], "standard": ["2/255", "4/255", "8/255"], "thorough": _SWEEP_FULL}[preset],
             "transfer": transfer},
        ]
        if preset != "quick":
            attacks.append({"name": "mifgsm", "params": {"eps": "8/255"}, "transfer": transfer})
        adaptive = {"enabled": True, "attack": "pgd", "params": {"steps": 10}}
    else:
        queries = _SQUARE_QUERIES[preset]
        attacks = [{"name": "square", "params": {"eps": "8/255", "queries": queries},
                    "eps_sweep": ["2/255", "4/255", "8/255", "16/255"] if preset != "quick" else [], "transfer": False}]
        if transfer:
            attacks.append({"name": "pgd", "params": {"eps": "8/255", "steps": 10}, "transfer": True,
                            "white_box": False})
        adaptive = {"enabled": True, "attack": "square", "params": {"queries": queries}}
    settings: dict[str, Any] = {
        "attack_images": {"quick": 50, "standard": 100, "thorough": 300}[preset],
        "attacks": attacks,
        "defenses": _ALL_DEFENSES if preset == "thorough" else ["jpeg+tv"],
        "adaptive": adaptive,
        "detectors": {"reference": {}, "squeeze": {}},
        "surrogates": [],
    }
    if transfer:
        settings["surrogates"] = [{"name": "small-cnn", "train": {"arch": "small-cnn", "epochs": 15, "data": train_data}}]
    return settings
