"""Typed names of a run's stages: where each keeps its files, and how a person reads it.

A :class:`StageKey` holds two strings made from the stage's typed fields (an attack's name, its
budget, the model it was crafted on; a defense's spec; an adaptive run's member, steps, draws and
restart): ``folder``, its folder under the run's ``stages/`` (and its key in
``samples/examples.npz``), and ``label``, the text the report and metrics.json show. Neither is
derived from the other, so rewording a label moves no file, and nothing ever parses a label back
into its fields: whoever needs a budget or a source reads the typed field.

The folder names are those medrobust has always written (``pgd_8_255``, ``pgd_8_255_from_twin``,
``pgd_8_255_adaptive_unrolled_10_steps_restart_1_vs_jpeg_tv``), so a run folder written before
stage keys existed resumes as it is (``tests/evaluation/test_stage_keys.py`` holds the names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medrobust.specs.components import eps_label

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def folder_name(*tokens: object) -> str:
    """``tokens`` joined into one safe folder (and ``.npz`` key) name: letters, digits, '.', '-'
    and '_' only, every other run of characters one '_'.

    Args:
        *tokens: the parts, in order (empty strings left out).

    Returns:
        The name, without leading or trailing '_' (``("pgd", "8/255")`` -> ``pgd_8_255``).
    """
    return _UNSAFE.sub("_", " ".join(str(t) for t in tokens if t != "")).strip("_")


@dataclass(frozen=True)
class StageKey:
    """A stage's folder name and its label (see the module docstring); ``str()`` gives the label.

    Args:
        folder: its folder under the run's ``stages/`` (and key in ``samples/examples.npz``).
        label: the text the report and metrics.json show.
        short: the label without what its context already says (an adaptive run's defense),
            for a progress line. Default ``""``.
    """

    folder: str
    label: str
    short: str = ""

    def __str__(self) -> str:
        return self.label


def attack_key(attack: str, eps: float | None, crafted_on: str | None = None) -> StageKey:
    """The key of an attack run, white-box or transferred.

    Args:
        attack: the attack's registry name.
        eps: its L-inf budget; None or 0: an unbounded attack.
        crafted_on: the surrogate the images were crafted on. Default None: white-box.

    Returns:
        The key: label ``pgd@8/255`` / ``pgd@8/255 from twin``, folder ``pgd_8_255`` /
        ``pgd_8_255_from_twin``.
    """
    budget = eps_label(eps) if eps else ""
    at = f"@{budget}" if budget else ""
    source = f" from {crafted_on}" if crafted_on else ""
    return StageKey(folder=folder_name(attack, budget, *(("from", crafted_on) if crafted_on else ())),
                    label=f"{attack}{at}{source}")


def gradient_adaptive_key(attack: str, eps: float, member: str, steps: int | None, draws: int | None, restart: int,
                          defense: str) -> StageKey:
    """The key of a gradient member's run in the adaptive portfolio against ``defense``.

    Args:
        attack: the gradient members' attack.
        eps: its budget.
        member: the member (its gradient route: ``unrolled``, ``smooth``, ``bpda``...).
        steps: its steps; None for an attack without steps.
        draws: its EOT draws; None for a deterministic defense.
        restart: its random start (0: the first, left out of the key).
        defense: the defense's spec.

    Returns:
        The key, e.g. label ``pgd@8/255 adaptive unrolled 10 steps restart 1 vs jpeg+tv``,
        folder ``pgd_8_255_adaptive_unrolled_10_steps_restart_1_vs_jpeg_tv``; its ``short``
        leaves out ``vs`` and the defense.
    """
    parts = [f"{attack}@{eps_label(eps)}", "adaptive", member]
    if steps is not None:
        parts += [str(steps), "steps"]
    if draws is not None:
        parts += ["eot", str(draws)]
    if restart:
        parts += ["restart", str(restart)]
    short = " ".join(parts)
    parts += ["vs", defense]
    return StageKey(folder=folder_name(*parts), label=" ".join(parts), short=short)


def square_adaptive_key(eps: float, queries: int, defense: str) -> StageKey:
    """The key of the Square member's run in the adaptive portfolio against ``defense``.

    Args:
        eps: its budget.
        queries: its queries.
        defense: the defense's spec.

    Returns:
        The key, e.g. label ``square@8/255 1000 queries adaptive vs tvm``; its ``short`` leaves
        out ``vs`` and the defense.
    """
    parts = [f"square@{eps_label(eps)}", str(queries), "queries", "adaptive"]
    return StageKey(folder=folder_name(*parts, "vs", defense), label=" ".join([*parts, "vs", defense]),
                    short=" ".join(parts))


def defense_folder(spec: str) -> str:
    """The folder of a defense's stages.

    Args:
        spec: the defense's spec.

    Returns:
        The spec made safe (:func:`folder_name`): ``jpeg:quality=75+tv`` -> ``jpeg_quality_75_tv``.
    """
    return folder_name(spec)


def transfer_sweep_name(attack: str, surrogate: str) -> str:
    """The name of ``attack``'s epsilon sweep crafted on ``surrogate``, as the metrics'
    ``eps_sweep`` holds it beside the white-box sweeps (named by the attack alone).

    Args:
        attack: the attack's registry name.
        surrogate: the surrogate's name.

    Returns:
        ``"<attack> from <surrogate>"``.
    """
    return f"{attack} from {surrogate}"
