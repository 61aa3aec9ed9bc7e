"""The three evaluation presets of ``mr.evaluate`` / ``medrobust evaluate --preset``: what each
runs, written out as the experiment configuration it resolves to (``RUN/config.yaml``).

Every preset measures every row on one budget grid (the configuration's ``grid``): the white-box
attacks' sweep, each defense's adaptive portfolio and the transfer attacks alike, so each row of
the scorecard is scored on the same budgets (:mod:`medrobust.evaluation.scorecard`).

``quick``     APGD-CE (Croce & Hein 2020; 100 steps, 1 restart) on the grid 1, 2, 4, 8/255 and
              SIA (N = 5 transformed copies, T = 10) at 8/255 white-box, on 50 images; JPEG+TV
              against the non-adaptive attacks and against an adaptive portfolio of two members
              on the same grid: APGD-CE with exact gradients where the defense has them (BPDA
              elsewhere; steps doubled from 10 until converged at 8/255, at most 40, one random
              start) and transfer from the undefended model; the reference and squeeze detectors;
              the guard JPEG+TV + squeeze against the guard-aware attacker (5 steps).
``standard``  AutoAttack standard (:class:`~medrobust.attacks.autoattack.AutoAttack`: APGD-CE,
              APGD-T, Square with 5000 queries on what survives; FAB-T not implemented) on the
              grid 1, 2, 4, 8, 16/255; SIA (N = 10) on 2, 4, 8/255 and MI-FGSM at 8/255; 100
              images; the whole adaptive portfolio (five members, two random starts, steps up to
              80); when a training folder is given, every attack also transferred from a small
              CNN surrogate trained on it; the guard JPEG+TV + squeeze against the guard-aware
              attacker (20 steps; the surrogate's images through it too).
``thorough``  AutoAttack on the grid 0.5, 1, 2, 4, 8, 16/255, APGD-CE with 3 restarts beside it,
              the study's SIA settings (N = 20, T = 10; Wang et al. 2023's defaults) on the same
              grid, MI-FGSM; 300 images; every defense (JPEG+TV, JPEG, TV, Guo et al.'s randomised
              TVM, bit depth, median), each against the whole portfolio (three random starts, steps
              up to 160); the guard of the first defense (JPEG+TV) + squeeze against the
              guard-aware attacker (40 steps, lambda up to 100).

The adaptive portfolio (:mod:`medrobust.evaluation.adaptive_portfolio`) of ``standard`` and
``thorough`` holds every member: APGD-CE with exact gradients where they exist, with a smooth
JPEG, and with BPDA through everything; Square on the defended model (1000 / 5000 queries);
transfer from the undefended model; EOT draws doubled until converged for a randomised defense.
The step doubling stops at 40 / 80 / 160 steps and the EOT doubling at 20 / 40 / 80 draws
(quick / standard / thorough); a check that did not converge there is reported as such. At the
grid's other budgets the portfolio runs with the effort the 8/255 checks reached.

A black-box model (ONNX: no gradients) cannot be attacked white-box: every preset then runs the
query-based Square attack (Andriushchenko et al. 2020; 300 / 1000 / 5000 queries, on the same
grid) instead of the gradient attacks, also as the adaptive attacker against each defense (it
queries the defended model), plus the transfer attack from a surrogate when a training folder is
given.

Every preset also evaluates the guard (:mod:`medrobust.evaluation.stages.guard`): each runs a
defense (JPEG+TV first) and the reference-free squeeze detector, so each puts them in front of
the model as ``mr.guard.from_run`` serves them and attacks that pipeline with Carlini & Wagner's
guard-aware attacker (PGD with the detectors' scores in its loss) on the preset's grid: lambda in
{0, 10} with 5 steps (quick), {0, 1, 10} with 20 steps (standard), {0, 1, 10, 100} with 40 steps
(thorough).

Certificates (randomized smoothing, Cohen et al. 2019: the ``certify`` stage) are in no preset by
default: they cost ``n0 + n`` forward passes per image (n = 1,000 / 10,000 / 100,000 noise draws for
quick / standard / thorough, Cohen et al.'s 100,000 for thorough; n0 = 100, alpha = 0.001), i.e.
55,000 forward passes for quick's 50 images and 30 million for thorough's 300, hours to days of a
DenseNet121 on a CPU; and they say little of a model not trained under the noise they are certified
with (most such models abstain at sigma = 0.25). ``mr.evaluate(..., certify=True)`` /
``medrobust evaluate --certify`` adds them with the preset's numbers (:func:`certify_settings`).

CT and volumes. A model that reads CT in HU (its contract's ``hu_windows``) is evaluated on
budgets in HU: every budget ``k/255`` above is stated as ``2k HU`` (the grids 2, 4, 8, 16 HU for
quick, 2-32 HU for standard, 1-32 HU for thorough; 16 HU, about two to three times a routine head
CT's image noise, in place of 8/255, which would be 128 HU), without JPEG (it would round 4096 HU
levels to 256; JPEG+TV becomes its TV) and with TV at its weight for HU
(:data:`~medrobust.defenses.total_variation.HU_TV`), slices and volumes alike. A volume model
(input (B, C, D, H, W)) runs what takes volumes: SIA is left out (its block transforms are 2-D),
JPEG+TV becomes TV (TV denoises in 3-D; JPEG codes 8 x 8 blocks of one slice), thorough's JPEG and
TVM are left out, and the squeeze detector squeezes without JPEG. Each such change is a sentence
with its reason in the configuration's ``left_out``, which the scorecard lists among what was not
tested.

The README's preset table gives the time per image each preset took (``benchmarks/bench_presets.py``).
"""

from __future__ import annotations

import re
from typing import Any

from medrobust.evaluation.adaptive_portfolio import PRESET_PORTFOLIOS

PRESETS = ("quick", "standard", "thorough")

GRIDS = {"quick": ["1/255", "2/255", "4/255", "8/255"],
         "standard": ["1/255", "2/255", "4/255", "8/255", "16/255"],
         "thorough": ["0.5/255", "1/255", "2/255", "4/255", "8/255", "16/255"]}
_ALL_DEFENSES = ["jpeg+tv", "jpeg", "tv", "tvm", "bits:bits=5", "median:size=3"]
_SQUARE_QUERIES = {"quick": 300, "standard": 1000, "thorough": 5000}
_RESTARTS = {"quick": 1, "standard": 2, "thorough": 3}
_MAX_STEPS = {"quick": 40, "standard": 80, "thorough": 160}
_MAX_EOT = {"quick": 20, "standard": 40, "thorough": 80}
_GUARD = {"quick": (5, [0, 10]), "standard": (20, [0, 1, 10]), "thorough": (40, [0, 1, 10, 100])}
CERTIFY_SAMPLES = {"quick": 1_000, "standard": 10_000, "thorough": 100_000}
"""Noise draws per image (Cohen et al.'s n) of each preset's certificates."""
_SIA = {"quick": (5, []), "standard": (10, ["2/255", "4/255", "8/255"]), "thorough": (20, GRIDS["thorough"])}


def preset_settings(preset: str, *, differentiable: bool = True, train_data: str | None = None,
                    volumes: bool = False, hu: bool = False) -> dict[str, Any]:
    """The configuration sections that ``preset`` runs (see the module docstring).

    Args:
        preset: ``quick``, ``standard`` or ``thorough``.
        differentiable: the model has gradients (False: a black box, attacked by queries).
        train_data: a training folder for a surrogate (transfer attacks); None: no surrogate.
        volumes: the model takes volumes (B, C, D, H, W): what refuses them is left out, each
            with its reason in ``left_out``. Default False.
        hu: the model reads CT in HU (CT windows): budgets in HU (``k/255`` -> ``2k HU``), no
            JPEG, TV at its weight for HU. Default False.

    Returns:
        The sections ``grid``, ``attacks``, ``defenses``, ``adaptive``, ``detectors``,
        ``surrogates``, ``guard`` and ``attack_images``, as a configuration file holds them (and
        ``left_out`` for a volume model or one reading CT: what was left out or changed, and why).

    Raises:
        ValueError: an unknown preset.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    transfer = train_data is not None and preset != "quick"
    grid = GRIDS[preset]
    if differentiable:
        attacks = _white_box_attacks(preset, transfer)
        adaptive = {"enabled": True, "attack": "apgd", "params": {"steps": 10, "loss": "ce"},
                    "portfolio": list(PRESET_PORTFOLIOS[preset]), "restarts": _RESTARTS[preset],
                    "square_queries": _SQUARE_QUERIES[preset], "max_steps": _MAX_STEPS[preset],
                    "max_eot_samples": _MAX_EOT[preset], "eps_sweep": list(grid)}
    else:
        queries = _SQUARE_QUERIES[preset]
        attacks = [{"name": "square", "params": {"eps": "8/255", "queries": queries},
                    "eps_sweep": list(grid), "transfer": False}]
        if transfer:
            attacks.append({"name": "apgd", "params": {"eps": "8/255", "steps": 100, "loss": "ce"}, "transfer": True,
                            "white_box": False, "eps_sweep": list(grid)})
        adaptive = {"enabled": True, "attack": "square", "params": {"queries": queries},
                    "portfolio": ["square", "transfer"], "square_queries": queries, "eps_sweep": list(grid)}
    settings: dict[str, Any] = {
        "attack_images": {"quick": 50, "standard": 100, "thorough": 300}[preset],
        "grid": grid,
        "attacks": attacks,
        "defenses": _ALL_DEFENSES if preset == "thorough" else ["jpeg+tv"],
        "adaptive": adaptive,
        "detectors": {"reference": {}, "squeeze": {}},
        "surrogates": [],
        # a defense and a reference-free detector are configured: the guard they make is evaluated too
        "guard": {"steps": _GUARD[preset][0], "lambdas": list(_GUARD[preset][1])},
    }
    if transfer:
        settings["surrogates"] = [{"name": "small-cnn", "train": {"arch": "small-cnn", "epochs": 15, "data": train_data}}]
    if volumes:
        settings = _for_volumes(settings, hu)
    return _in_hu(_for_ct(settings)) if hu else settings


JPEG_ON_CT = ("JPEG codes 8-bit images: on CT it would round 4096 HU levels to 256 (16 HU steps), which no scanner "
              "or PACS does to CT")
BITS_ON_CT = ("5 bits of the 12-bit HU range are steps of 132 HU, which erase the contrast of brain tissue and of "
              "every finding in it (a bleed is 20-50 HU above brain)")
TVM_ON_CT = ("its drop rate and weight were set on 8-bit radiographs (weight 0.03, thirty times TV's weight for HU) "
             "and have not been measured on CT")


def _for_ct(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` for a model reading CT in HU, slices or volumes: no JPEG (JPEG+TV evaluated as
    its TV), TV at its weight for HU (:data:`~medrobust.defenses.total_variation.HU_TV`; the
    study's 0.1 smooths like 400 HU there), and neither 5-bit depth (132 HU steps) nor TVM (its
    weight set on radiographs), each change a sentence in ``left_out``."""
    from medrobust.defenses.total_variation import HU_TV

    given = settings["defenses"]
    left_out, defenses = list(settings.get("left_out", [])), []
    for spec in given:
        if spec == "jpeg+tv" and "tv" not in given:
            defenses.append(HU_TV)
            left_out.append(f"jpeg+tv (the preset's defense): evaluated as {HU_TV} alone: {JPEG_ON_CT}")
        elif spec in ("jpeg", "jpeg+tv"):
            left_out.append(f"{spec} (the preset's defense): not evaluated: {JPEG_ON_CT}")
        elif spec == "tv":
            defenses.append(HU_TV)
            left_out.append(f"tv (the preset's defense): run as {HU_TV} on CT, its weight and tolerance for HU "
                            "(the study's weight 0.1 is made for 8-bit images and would smooth like 400 HU)")
        elif spec == "bits:bits=5":
            left_out.append(f"{spec} (the preset's defense): not evaluated on CT: {BITS_ON_CT}")
        elif spec == "tvm":
            left_out.append(f"{spec} (the preset's defense): not evaluated on CT: {TVM_ON_CT}")
        else:
            defenses.append(spec)
    return {**settings, "defenses": defenses, "left_out": left_out}


_GREY_LEVELS = re.compile(r"(\d+(?:\.\d+)?)/255")
HU_PER_GREY_LEVEL = 2
"""A preset's budget ``k/255`` on CT is ``2k HU``: 8/255 (the 8-bit reference) becomes 16 HU."""


def _in_hu(value: Any) -> Any:
    """``value`` (the preset's sections) with every budget ``k/255`` stated as ``2k HU``."""
    if isinstance(value, dict):
        return {k: _in_hu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_in_hu(v) for v in value]
    if isinstance(value, str) and (m := _GREY_LEVELS.fullmatch(value)):
        return f"{float(m.group(1)) * HU_PER_GREY_LEVEL:g}HU"
    return value


_VOLUME_DEFENSES = {"jpeg+tv": "tv"}
"""What a preset's defense becomes on volumes: JPEG+TV's TV, which denoises in 3-D."""


def _for_volumes(settings: dict[str, Any], hu: bool = False) -> dict[str, Any]:
    """``settings`` for a volume model: the attacks and defenses that refuse volumes left out (or,
    JPEG+TV, replaced by its TV), each change a sentence with the component's own reason in
    ``left_out``."""
    from medrobust.attacks.registry import build_attack
    from medrobust.defenses.registry import build_defense
    from medrobust.detection.squeeze import DEFAULT_SQUEEZERS, VOLUME_SQUEEZERS

    left_out: list[str] = []
    attacks = []
    for a in settings["attacks"]:
        refusal = build_attack(a["name"]).volumes
        if refusal is True:
            attacks.append(a)
        else:
            left_out.append(f"{a['name']} (the preset's attack): not run, it refuses volumes: {refusal}")
    defenses = []
    for spec in settings["defenses"]:
        refusal = build_defense(spec).volumes
        if refusal is True:
            defenses.append(spec)
            continue
        kept = _VOLUME_DEFENSES.get(spec)
        if kept is not None and kept not in settings["defenses"]:
            defenses.append(kept)
            left_out.append(f"{spec} (the preset's defense): evaluated as {kept} alone, since its JPEG refuses "
                            f"volumes: {refusal}")
        else:
            left_out.append(f"{spec} (the preset's defense): not evaluated, it refuses volumes: {refusal}")
    # the squeeze detector's defaults that take volumes (its JPEG refuses them); on CT, the ones a run
    # on HU data picks (VOLUME_SQUEEZERS, evaluation.squeezers_for_data: bit depth would erase HU contrast)
    squeezers = list(VOLUME_SQUEEZERS) if hu else [q for q in DEFAULT_SQUEEZERS if build_defense(q).volumes is True]
    squeeze_jpeg = "the squeeze detector's JPEG squeezer: left out (the detector squeezes with " + \
        ", ".join(squeezers) + f"), it refuses volumes: {build_defense('jpeg').volumes}"
    return {**settings, "attacks": attacks, "defenses": defenses,
            "detectors": {**settings["detectors"], "squeeze": {"squeezers": squeezers}},
            "left_out": [*left_out, squeeze_jpeg]}


def _white_box_attacks(preset: str, transfer: bool) -> list[dict[str, Any]]:
    """The white-box attacks of ``preset`` on a model with gradients: APGD-CE (quick) or
    AutoAttack (standard, thorough) on the grid, SIA, and MI-FGSM beyond quick."""
    grid = GRIDS[preset]
    if preset == "quick":
        attacks: list[dict[str, Any]] = [
            {"name": "apgd", "params": {"eps": "8/255", "loss": "ce", "steps": 100, "restarts": 1},
             "eps_sweep": list(grid), "transfer": transfer}]
    else:
        attacks = [{"name": "autoattack", "params": {"eps": "8/255", "steps": 100, "queries": 5000},
                    "eps_sweep": list(grid), "transfer": transfer}]
    if preset == "thorough":
        attacks.append({"name": "apgd", "params": {"eps": "8/255", "loss": "ce", "steps": 100, "restarts": 3},
                        "eps_sweep": list(grid), "transfer": transfer})
    copies, sweep = _SIA[preset]
    attacks.append({"name": "sia", "params": {"eps": "8/255", "n_copies": copies, "steps": 10},
                    "eps_sweep": list(sweep), "transfer": transfer})
    if preset != "quick":
        attacks.append({"name": "mifgsm", "params": {"eps": "8/255"}, "transfer": transfer})
    return attacks


def certify_settings(preset: str, sigma: float = 0.25) -> dict[str, Any]:
    """The ``certify`` section a preset runs when asked for certificates (see the module docstring).

    Args:
        preset: ``quick``, ``standard`` or ``thorough``.
        sigma: the noise's standard deviation in [0, 1] image units. Default 0.25.

    Returns:
        ``{"sigma", "n0", "n", "alpha"}``: n0 = 100, alpha = 0.001 and the preset's ``n``.

    >>> certify_settings("standard")
    {'sigma': 0.25, 'n0': 100, 'n': 10000, 'alpha': 0.001}
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return {"sigma": sigma, "n0": 100, "n": CERTIFY_SAMPLES[preset], "alpha": 0.001}
