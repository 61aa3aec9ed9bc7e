"""The three evaluation presets of ``mr.evaluate`` / ``medrobust evaluate --preset``: what each
runs, written out as the experiment configuration it resolves to (``RUN/config.yaml``).

``quick``     PGD (10 steps) at 1, 2, 4, 8/255 and SIA (N = 5 transformed copies, T = 10) at
              8/255 white-box; JPEG+TV against the non-adaptive attacks and against an
              adaptive portfolio of two members at the same four budgets: PGD with exact
              gradients where the defense has them (BPDA elsewhere; steps doubled until
              converged at 8/255, one random start) and transfer from the undefended model;
              the reference and squeeze detectors.
``standard``  adds MI-FGSM, epsilon sweeps 1, 2, 4, 8, 16/255 for PGD and 2, 4, 8/255 for SIA,
              SIA with N = 10, and, when a training folder is given, a transfer attack from a
              small CNN surrogate trained on it.
``thorough``  the study's SIA settings (N = 20, T = 10; Wang et al. 2023's defaults) with a
              1-16/255 sweep; every defense (JPEG+TV, JPEG, TV, Guo et al.'s randomised TVM,
              bit depth, median).

The adaptive portfolio (:mod:`medrobust.evaluation.adaptive_portfolio`) of ``standard`` and
``thorough`` holds every member: PGD with exact gradients where they exist, with a smooth JPEG,
and with BPDA through everything; Square on the defended model (1000 / 5000 queries); transfer
from the undefended model; EOT draws doubled until converged for a randomised defense; 2 / 3
random starts. The step doubling stops at 40 / 80 / 160 steps and the EOT doubling at 20 / 40 /
80 draws (quick / standard / thorough); a check that did not converge there is reported as such.
Each defense's portfolio runs at every budget of the preset's grid (the quick one above; 1, 2, 4,
8, 16/255 for the others), at the other budgets with the effort the 8/255 checks reached, so its
rows are scored on the undefended model's grid.

A black-box model (ONNX: no gradients) cannot be attacked white-box: every preset then runs the
query-based Square attack (Andriushchenko et al. 2020; 300 / 1000 / 5000 queries, on the same
grid) instead of the gradient attacks, also as the adaptive attacker against each defense (it queries the defended
model), plus the transfer attack from a surrogate when a training folder is given.
"""

from __future__ import annotations

from typing import Any

from medrobust.evaluation.adaptive_portfolio import PRESET_PORTFOLIOS

PRESETS = ("quick", "standard", "thorough")

_SWEEP_FULL = ["1/255", "2/255", "4/255", "8/255", "16/255"]
_SWEEP_QUICK = ["1/255", "2/255", "4/255", "8/255"]  # the fewest budgets a score needs, and then some
_ALL_DEFENSES = ["jpeg+tv", "jpeg", "tv", "tvm", "bits:bits=5", "median:size=3"]
_SQUARE_QUERIES = {"quick": 300, "standard": 1000, "thorough": 5000}
_RESTARTS = {"quick": 1, "standard": 2, "thorough": 3}
_MAX_STEPS = {"quick": 40, "standard": 80, "thorough": 160}
_MAX_EOT = {"quick": 20, "standard": 40, "thorough": 80}


def preset_settings(preset: str, *, differentiable: bool = True, train_data: str | None = None) -> dict[str, Any]:
    """The configuration sections (attacks, defenses, adaptive, detectors, surrogates,
    attack_images) that ``preset`` runs; see the module docstring."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    transfer = train_data is not None and preset != "quick"
    if differentiable:
        attacks: list[dict[str, Any]] = [
            {"name": "pgd", "params": {"eps": "8/255", "steps": 10},
             "eps_sweep": _sweep(preset), "transfer": transfer},
            {"name": "sia", "params": {"eps": "8/255", "n_copies": {"quick": 5, "standard": 10, "thorough": 20}[preset],
                                       "steps": 10},
             "eps_sweep": {"quick": [], "standard": ["2/255", "4/255", "8/255"], "thorough": _SWEEP_FULL}[preset],
             "transfer": transfer},
        ]
        if preset != "quick":
            attacks.append({"name": "mifgsm", "params": {"eps": "8/255"}, "transfer": transfer})
        adaptive = {"enabled": True, "attack": "pgd", "params": {"steps": 10},
                    "portfolio": list(PRESET_PORTFOLIOS[preset]), "restarts": _RESTARTS[preset],
                    "square_queries": _SQUARE_QUERIES[preset], "max_steps": _MAX_STEPS[preset],
                    "max_eot_samples": _MAX_EOT[preset], "eps_sweep": _sweep(preset)}
    else:
        queries = _SQUARE_QUERIES[preset]
        attacks = [{"name": "square", "params": {"eps": "8/255", "queries": queries},
                    "eps_sweep": _sweep(preset), "transfer": False}]
        if transfer:
            attacks.append({"name": "pgd", "params": {"eps": "8/255", "steps": 10}, "transfer": True,
                            "white_box": False})
        adaptive = {"enabled": True, "attack": "square", "params": {"queries": queries},
                    "portfolio": ["square", "transfer"], "square_queries": queries, "eps_sweep": _sweep(preset)}
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


def _sweep(preset: str) -> list[str]:
    """The budgets every row of ``preset`` is measured at: the undefended model's gradient (or
    query) attack and each defense's adaptive portfolio alike, so each row's score rests on the
    same grid (a row tested at one budget would score only its straight line)."""
    return _SWEEP_QUICK if preset == "quick" else _SWEEP_FULL
