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

**The CT demo** (``medrobust demo --modality ct``, ``examples/demo-ct.yaml``, :func:`ct_demo_settings`):
the same study on head-CT phantoms generated in the run (normal, haemorrhage, infarct in HU,
:class:`~medrobust.data.phantom.ct_dataset.CTPhantomDataset`), stored and attacked on the CT grid
(integer HU): a small 3-D CNN (``small-cnn-3d``) from scratch on two CT windows (brain 40/80 and
subdural 80/200, one network channel each, as intracranial-haemorrhage models use), APGD-CE on
the grid 2, 4, 8, 16 HU (up to the CT score's 16 HU) and MI-FGSM at 4 HU, white-box and
transferred from a surrogate on the brain window alone; TV in 3-D with the phantoms' voxel spacing
(no JPEG: it refuses volumes) against attackers who ignore it and who adapt to it (APGD-CE with
exact gradients through TV, and transfer); both detectors with the CT benign changes and the
volume squeezers. Every budget is stated in HU beside the phantoms' measured image noise.

Why this recipe (measured 2026-12-06 on this project's 2-core machine while other engineers'
jobs loaded it, load average 5-9, so every time here is pessimistic): volumes of 16 x 32 x 32
(360 training heads, lr 1e-3) stayed at chance for 5 epochs, and the validation loss of a
batch-normalised 3-D CNN jumps while the learning rate is high, so the default early stopping
(5 epochs without a better validation loss) ended trainings at chance; hence ``lr`` 3e-3 and
early stopping off (``early_stopping_patience`` = epochs: a fixed amount of work, the best epoch's
weights kept). 20 epochs of 360 heads at 16 x 32 x 32 reached 91.7% test accuracy with the training
accuracy at 100% (over-fitting); 12 epochs of 720 heads at 8 x 32 x 32 (10 mm slices: every
bleed still crosses a slice) 91.7%, and of 900 heads (500 per class, the demo's) 94.3% with seed 1
(300 test heads; 12 haemorrhages or normals confused, 4 infarcts called normal) but 89.3% with
seed 0 (the validation accuracy still rising at the last epoch), hence 16 epochs. 8 slices
instead of 16 halves every stage's cost; 32 px in-plane (6.9 mm pixels) keeps a bleed at 1-3
pixels of radius, which the network still finds. The adaptive attacker's gradients run through
every TV iteration (unrolled), so its APGD-CE starts at 5 steps (doubled once at most) and TV
stops after 50 iterations: with 10 -> 20 steps and 200 iterations its first budget alone took
over a minute for 48 heads. Tiny volumes (4 x 16 x 16) and 2-D slices of 40 heads per class
never left chance in the few seconds a test can afford.
"""

from __future__ import annotations

from typing import Any

from medrobust.data.phantom.ct_head import ct_head_spacing
from medrobust.defenses.total_variation import HU_TV
from medrobust.evaluation.config import ExperimentConfig

APGD_STEPS = 50  # APGD-CE's steps in the demo (AutoAttack's 100 in the presets), for time
SMOOTHED_SIGMA = 0.25  # the smoothed demo's training noise and certificate noise (Cohen et al.'s middle setting)

# The CT demo (module docstring, "The CT demo"): its recipe, chosen by measuring
CT_SIZE = 32  # in-plane matrix of the head-CT phantoms (220 mm field of view: 6.9 mm pixels)
CT_DEPTH = 8  # slices per volume (80 mm: 10 mm slices)
CT_PER_CLASS = 500  # heads per class (60/20/20 split: 900 train, 300 validation, 300 test)
CT_EPOCHS = 16
CT_LR = 0.003
CT_SURROGATE_EPOCHS = 4
CT_TRAIN_BATCH = 16
CT_BATCH = 24
CT_ATTACK_IMAGES = 48
CT_CALIBRATION_IMAGES = 60
CT_WINDOWS = ((40, 80), (80, 200))  # brain and subdural windows (level, width in HU), one network channel each
CT_GRID = ("2HU", "4HU", "8HU", "16HU")  # up to the CT score's 16 HU (stored_grid.CT_HU.score_budget)
CT_MAIN_EPS = "4HU"
CT_APGD_STEPS = 20
CT_ADAPTIVE_STEPS = 5  # the adaptive attacker's first steps (doubled once at most): unrolled TV is costly
CT_TV = f"{HU_TV},max_iter=50"  # TV's weight and tolerance for HU (defenses.total_variation.HU_TV: why)
CT_DEFENSE = f"{CT_TV},spacing={';'.join(f'{v:g}' for v in ct_head_spacing(CT_SIZE, CT_DEPTH))}"
"""The CT demo's defense: TV in 3-D with the phantoms' voxel spacing (dz; dy; dx in mm)."""


def demo_settings(quick: bool = False, smoothed: bool = False, modality: str = "cxr") -> dict[str, Any]:
    """The demo's configuration as plain data (what ``examples/demo.yaml`` holds;
    ``examples/demo-smoothed.yaml`` with ``smoothed``; ``examples/demo-ct.yaml`` with ``modality="ct"``).

    Args:
        quick: ``medrobust demo --quick``'s smaller run. Default False.
        smoothed: ``medrobust demo --smoothed``: the model trained under Gaussian noise and
            certified by randomized smoothing (see the module docstring). Default False.
        modality: ``cxr`` (chest radiographs, the default) or ``ct``: the head-CT demo
            (:func:`ct_demo_settings`).

    Returns:
        The configuration's settings, as a YAML file would hold them.

    Raises:
        ValueError: an unknown modality, or ``smoothed`` with CT (its certificate is in [0, 1]
            image units, on the radiographs).
    """
    if modality not in ("cxr", "ct"):
        raise ValueError(f"demo modality {modality!r}: use cxr (chest radiographs) or ct (head CT in HU)")
    if modality == "ct":
        if smoothed:
            raise ValueError("the smoothed demo (--smoothed) runs on the chest radiographs; leave out --modality ct "
                             "or --smoothed")
        return ct_demo_settings(quick)
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


def ct_demo_settings(quick: bool = False) -> dict[str, Any]:
    """The head-CT demo's configuration as plain data (what ``examples/demo-ct.yaml`` holds; the
    recipe and why in the module docstring, "The CT demo").

    Args:
        quick: a smaller attack subset (the model's training unchanged). Default False.

    Returns:
        The configuration's settings, as a YAML file would hold them.
    """
    from medrobust.detection.squeeze import VOLUME_SQUEEZERS

    recipe = {"arch": "small-cnn-3d", "weights": "none", "lr": CT_LR, "batch_size": CT_TRAIN_BATCH,
              "lr_schedule": "cosine", "warmup_epochs": 1, "augment": False}
    return {
        "name": "demo-ct" + ("-quick" if quick else ""),
        "output_dir": "runs",
        "seed": 0,
        "device": "auto",
        "batch_size": CT_BATCH,
        "attack_images": 24 if quick else CT_ATTACK_IMAGES,
        "sample_images": 3 if quick else 4,
        "data": {"source": "phantom", "modality": "ct", "size": CT_SIZE, "depth": CT_DEPTH,
                 "per_class": CT_PER_CLASS, "phantom_seed": 0},
        "model": {"train": {**recipe, "intensity": {"hu_windows": [list(w) for w in CT_WINDOWS]},
                            "epochs": CT_EPOCHS, "early_stopping_patience": CT_EPOCHS}},
        "surrogates": [{"name": "small-cnn-3d-brain", "train": {
            **recipe, "intensity": {"hu_windows": [list(CT_WINDOWS[0])]}, "epochs": CT_SURROGATE_EPOCHS,
            "early_stopping_patience": CT_SURROGATE_EPOCHS}}],
        "grid": list(CT_GRID),
        "attacks": [
            {"name": "apgd", "params": {"eps": CT_MAIN_EPS, "loss": "ce", "steps": CT_APGD_STEPS},
             "eps_sweep": list(CT_GRID)},
            {"name": "mifgsm", "params": {"eps": CT_MAIN_EPS}},
        ],
        "defenses": [CT_DEFENSE],
        "adaptive": {"enabled": True, "attack": "apgd", "params": {"steps": CT_ADAPTIVE_STEPS, "loss": "ce"},
                     "portfolio": ["unrolled", "transfer"], "restarts": 1, "max_steps": 2 * CT_ADAPTIVE_STEPS,
                     "eps_sweep": list(CT_GRID)},
        "detectors": {"reference": {}, "squeeze": {"squeezers": list(VOLUME_SQUEEZERS),
                                                   "calibration_images": 30 if quick else CT_CALIBRATION_IMAGES}},
    }


def demo_config(quick: bool = False, smoothed: bool = False, modality: str = "cxr",
                **overrides: Any) -> ExperimentConfig:
    """The demo's configuration, validated.

    Args:
        quick: ``medrobust demo --quick``'s smaller run. Default False.
        smoothed: ``medrobust demo --smoothed``: noise training and certificates. Default False.
        modality: ``cxr`` (the default) or ``ct`` (``medrobust demo --modality ct``).
        **overrides: top-level settings that replace the demo's (whole sections).

    Returns:
        The :class:`~medrobust.evaluation.config.ExperimentConfig`.
    """
    return ExperimentConfig.model_validate({**demo_settings(quick, smoothed, modality), **overrides})
