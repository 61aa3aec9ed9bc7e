"""The embedded default experiment run by ``medrobust demo`` (``examples/demo.yaml`` is the
same configuration as a file): phantom chest radiographs at 64 px, DenseNet121 trained from
scratch, SIA and MI-FGSM at 8/255 and APGD-CE (Croce & Hein 2020) on the grid 2, 4, 8/255,
white-box and transferred from a small CNN surrogate, the study's JPEG+TV defense scored against
attackers who ignore it and who adapt to it on the same grid, and both detectors. Every row of
the demo's scorecard is measured on that one grid (``--quick`` too).

Training is a fixed amount of work (its epochs), never a wall-clock budget: how fast the machine
runs changes nothing, and with one thread the same seed on the same machine gives the same model.
With two, oneDNN's convolutions sometimes round differently from run to run (README, "What the
demo prints"), and another CPU may round differently too; either way another model is trained,
so the recipe is chosen to converge from any start (the seeds below), not on one machine's numbers.

Departures from the study's settings, for time on 2 CPU cores: 64 px instead of 224 px
(``--quick``: 48 px), training from scratch (no ImageNet weights offline) with a one-epoch
learning-rate warm-up and a cosine schedule instead of the plateau rule, and without the study's
augmentation; SIA with fewer transformed copies (N = 6 instead of 20; ``--quick``: 4), and a
subset of the test set for the attacks (48 images; ``--quick``: 24); APGD-CE with 50 steps
instead of AutoAttack's 100. The adaptive attacker
against JPEG+TV is two members of the portfolio (:mod:`medrobust.evaluation.adaptive_portfolio`):
APGD-CE with exact gradients through TV and BPDA through JPEG, its steps doubled from 10 until the
last doubling changed at most one image (at most 20), and transfer from the undefended model;
``examples/adaptive-portfolio.yaml`` runs the whole portfolio on the demo's model.

Why this recipe: with the study's augmentation (flip, zoom, rotation, shifts, resampled) the
network trained from scratch learnt slowly on the phantoms (it tells pneumothorax apart early,
pneumonia late; the study fine-tuned a pre-trained network, which needs less); without it, it
converged over every seed tried, and 9 epochs of 1,080 images (600 per class) were enough. A
fresh set of phantoms for every epoch learnt more slowly still. The phantoms vary in anatomy,
position and exposure, and early stopping on the validation loss keeps the best epoch. The
augmentation stays the default of ``medrobust train`` and of configuration files.

``--quick`` trades accuracy for time: 8 epochs of 720 phantoms at 48 px, chosen over fewer
images at 64 px and more at 32 px (DenseNet121's per-layer overheads dominate below 64 px).

The accuracies and training times behind these choices, dated and with the machine, are in the
README's demo section ("What the demo prints", "How the demo's recipe was chosen").

``--smoothed`` (``examples/demo-smoothed.yaml``) is the same run with the model trained under
Gaussian noise of sigma 0.25 (``train.noise_sigma``, Cohen et al. 2019's Gaussian data
augmentation) and certified by randomized smoothing at the same sigma (the ``certify`` stage: n0 =
100, n = 1,000 as the quick preset, alpha = 0.001, on the attack subset), so its report has the
certified accuracy at L2 radii 0.1, 0.25, 0.5 and 1.0 beside the empirical scorecard.
"""

from __future__ import annotations

from typing import Any

from medrobust.evaluation.config import ExperimentConfig

APGD_STEPS = 50  # APGD-CE's steps in the demo (AutoAttack's 100 in the presets), for time
SMOOTHED_SIGMA = 0.25  # the smoothed demo's training noise and certificate noise (Cohen et al.'s middle setting)


def demo_settings(quick: bool = False, smoothed: bool = False) -> dict[str, Any]:
    """The demo's configuration as plain data (what ``examples/demo.yaml`` holds;
    ``examples/demo-smoothed.yaml`` with ``smoothed``).

    Args:
        quick: ``medrobust demo --quick``'s smaller run. Default False.
        smoothed: ``medrobust demo --smoothed``: the model trained under Gaussian noise and
            certified by randomized smoothing (see the module docstring). Default False.

    Returns:
        The configuration's settings, as a YAML file would hold them.
    """
    recipe = {"lr_schedule": "cosine", "warmup_epochs": 1, "augment": False}
    grid = ["2/255", "4/255", "8/255"]  # the fewest budgets a row is scored on (robustness_curve.MIN_SCORED_BUDGETS)
    name = "demo" + ("-smoothed" if smoothed else "") + ("-quick" if quick else "")
    noise = {"noise_sigma": SMOOTHED_SIGMA} if smoothed else {}
    certify = {"certify": {"sigma": SMOOTHED_SIGMA, "n0": 100, "n": 1000, "alpha": 0.001}} if smoothed else {}
    return {
        "name": name,
        "output_dir": "runs",
        "seed": 0,
        "device": "auto",
        "batch_size": 24,
        "attack_images": 24 if quick else 48,
        "sample_images": 3 if quick else 4,
        "data": {"source": "phantom", "size": 48 if quick else 64, "per_class": 400 if quick else 600, "phantom_seed": 0},
        "model": {"train": {"arch": "densenet121", "weights": "none", **recipe, "epochs": 8 if quick else 9, **noise}},
        "surrogates": [{"name": "small-cnn", "train": {"arch": "small-cnn", **recipe, "epochs": 6}}],
        "grid": grid,
        "attacks": [
            {"name": "sia", "params": {"eps": "8/255", "n_copies": 4 if quick else 6}},
            {"name": "apgd", "params": {"eps": "8/255", "loss": "ce", "steps": APGD_STEPS}, "eps_sweep": list(grid)},
            {"name": "mifgsm", "params": {"eps": "8/255"}},
        ],
        "defenses": ["jpeg:quality=75+tv"],
        "adaptive": {"enabled": True, "attack": "apgd", "params": {"steps": 10, "loss": "ce"},
                     "portfolio": ["unrolled", "transfer"], "restarts": 1, "max_steps": 20, "eps_sweep": list(grid)},
        "detectors": {"reference": {}, "squeeze": {"calibration_images": 60 if quick else 100}},
        **certify,
    }


def demo_config(quick: bool = False, smoothed: bool = False, **overrides: Any) -> ExperimentConfig:
    """The demo's configuration, validated.

    Args:
        quick: ``medrobust demo --quick``'s smaller run. Default False.
        smoothed: ``medrobust demo --smoothed``: noise training and certificates. Default False.
        **overrides: top-level settings that replace the demo's (whole sections).

    Returns:
        The :class:`~medrobust.evaluation.config.ExperimentConfig`.
    """
    return ExperimentConfig.model_validate({**demo_settings(quick, smoothed), **overrides})
