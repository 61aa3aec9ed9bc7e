"""Figures beyond the study: accuracy versus budget, the transfer matrix, defenses against an
attacker who ignores them versus one who adapts to them, and the certified accuracy of the smoothed
classifier versus the L2 radius."""

from __future__ import annotations

import numpy as np

from medrobust.evaluation.results import CertifiedFigure, DefenseOutcome, RunMetrics, SweepPoint, TransferMatrix
from medrobust.report.figure import COLORS, ReportFigure, finish, grouped_bars, new_figure, percent_axis
from medrobust.report.run_contents import budget_unit, format_eps, pct


def accuracy_vs_epsilon(sweeps: dict[str, list[SweepPoint]], metrics: RunMetrics) -> ReportFigure | None:
    sweeps = {name: sorted(points, key=lambda p: p.eps) for name, points in sweeps.items() if points}
    if not sweeps:
        return None
    fig = new_figure(6.0, 3.6)
    ax = fig.add_subplot()
    markers = "osD^v<>"
    unit = budget_unit(metrics)
    levels = 4095 if unit == "HU" else 255
    for i, (name, points) in enumerate(sweeps.items()):
        ax.plot([levels * p.eps for p in points], [100 * p.accuracy for p in points], marker=markers[i % len(markers)],
                ms=4, color=COLORS[i % len(COLORS)], label=name)
    ax.axhline(100 * metrics.baseline.accuracy, color="grey", ls="--", lw=1, label="clean (baseline)")
    ax.axhline(100 / max(len(metrics.baseline.classes), 1), color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("eps (HU, L-inf)" if unit == "HU" else "eps (grey levels of 255, L-inf)")
    ax.set_ylabel("accuracy (%)")
    percent_axis(ax, top=105)
    ax.xaxis.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    budgets = "; ".join(f"{name}: " + ", ".join(format_eps(p.eps, unit) for p in points) for name, points in sweeps.items())
    return finish(
        fig, "15_accuracy_vs_epsilon", "Accuracy versus epsilon",
        f"Accuracy of the model on the attack images as the attack budget grows (white-box). Budgets: {budgets}. "
        f"Dashed: clean accuracy ({pct(metrics.baseline.accuracy)}); dotted: chance.",
    )


def transfer_matrix(transfer: TransferMatrix) -> ReportFigure | None:
    if not transfer.sources or not transfer.targets:
        return None
    rows, cols = len(transfer.sources), len(transfer.targets)
    fig = new_figure(max(8.0, 2.5 + 2.2 * cols * 2), 1.6 + 0.7 * rows)
    axes = fig.subplots(1, 2)
    for ax, values, title in ((axes[0], transfer.success_rate, "success rate, all images"),
                              (axes[1], transfer.success_rate_correct, "success rate, correctly classified")):
        grid = np.asarray(values, dtype=float)
        ax.imshow(grid, cmap="Reds", vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(rows):
            for j in range(cols):
                ax.text(j, i, f"{100 * grid[i, j]:.0f}%", ha="center", va="center", fontsize=9,
                        color="white" if grid[i, j] > 0.6 else "black")
        ax.set_xticks(range(cols), transfer.targets)
        ax.set_yticks(range(rows), transfer.sources)
        ax.set_xlabel("target (attacked model)")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("surrogate (crafted on)")
    return finish(
        fig, "17_transfer_matrix", "Transfer matrix",
        f"Share of images on which {transfer.attack} crafted on each surrogate (rows) changes the answer of each target "
        "model (columns): of all attack images (left) and of those the target classified correctly (right). The "
        "diagonal, where present, is the white-box case.",
    )


def strongest_non_adaptive(defense: DefenseOutcome, metrics: RunMetrics) -> tuple[str | None, float | None,
                                                                                      float | None]:
    """At the adaptive attacker's budget: the non-adaptive attack that left the defended model the
    lowest accuracy, that accuracy, and the undefended model's accuracy under the same attack
    (``(None, None, None)`` when no attack ran at that budget)."""
    budget = defense.adaptive_eps
    keys = [k for k in defense.non_adaptive
            if budget is None or abs(defense.non_adaptive_eps.get(k, _attack_eps(metrics, k)) - budget) < 1e-9]
    if not keys:
        return None, None, None
    key = min(keys, key=lambda k: defense.non_adaptive[k])
    undefended = defense.non_adaptive[key] - defense.non_adaptive_recovery_pp.get(key, 0.0) / 100
    return key, defense.non_adaptive[key], undefended


def _attack_eps(metrics: RunMetrics, key: str) -> float:
    try:
        return metrics.attack(key).eps
    except KeyError:
        return float("nan")


def adaptive_defense(metrics: RunMetrics) -> ReportFigure | None:
    if not metrics.defenses:
        return None
    series: dict[str, list[float]] = {"undefended, under attack": [], "defended, attacker ignores the defense": [],
                                      "defended, adaptive attacker": [], "defended, clean images": []}
    notes = []
    for defense in metrics.defenses:
        key, ignored, undefended = strongest_non_adaptive(defense, metrics)
        if undefended is None:  # adaptive_recovery_pp is measured against the same attack without the defense
            undefended = defense.adaptive_accuracy - defense.adaptive_recovery_pp / 100
        series["undefended, under attack"].append(100 * undefended)
        series["defended, attacker ignores the defense"].append(100 * ignored if ignored is not None else float("nan"))
        series["defended, adaptive attacker"].append(100 * defense.adaptive_accuracy)
        series["defended, clean images"].append(100 * defense.clean.accuracy)
        notes.append(f"{defense.name}: the attacker who ignores it is the strongest non-adaptive attack at the same "
                     f"budget ({key or 'none ran at it'}); the adaptive one is the {defense.adaptive_attack}")
    fig = new_figure(max(6.5, 1.5 + 2.6 * len(metrics.defenses)), 3.8)
    ax = fig.add_subplot()
    grouped_bars(ax, [d.name for d in metrics.defenses], series)
    ax.axhline(100 * metrics.baseline.accuracy, color="grey", ls="--", lw=1, label="undefended, clean images")
    percent_axis(ax, top=118)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7, ncols=2, loc="upper center")
    return finish(
        fig, "18_adaptive_defense", "Adaptive versus non-adaptive defense",
        "Accuracy of the model under attack without a defense, with the defense against an attacker who ignores it, "
        "and with the defense against an attacker who knows it and differentiates through it (Athalye et al. 2018), "
        "plus the defended model on clean images. " + "; ".join(notes) + ".",
    )


def certified_accuracy(certified: CertifiedFigure | None) -> ReportFigure | None:
    """Certified accuracy of the smoothed classifier against the L2 radius (Cohen et al. 2019, Fig. 6's
    form), the report's radii marked, the radius also in grey levels per pixel on the top axis."""
    if certified is None or not certified.curve:
        return None
    fig = new_figure(6.0, 3.6)
    ax = fig.add_subplot()
    radii = [p.radius for p in certified.curve]
    ax.step(radii, [100 * p.accuracy for p in certified.curve], where="post", color=COLORS[0],
            label=f"certified accuracy (sigma {certified.sigma:g}, n {certified.draws:,})")
    ax.plot([p.radius for p in certified.points], [100 * p.accuracy for p in certified.points], "o", ms=4,
            color=COLORS[0])
    ax.axhline(100 * certified.smoothed_clean_accuracy, color="grey", ls="--", lw=1,
               label=f"smoothed classifier, clean ({pct(certified.smoothed_clean_accuracy)})")
    ax.axhline(100 * certified.base_clean_accuracy, color="grey", ls=":", lw=1,
               label=f"base model, clean ({pct(certified.base_clean_accuracy)})")
    scale = 255.0 / np.sqrt(max(1, certified.pixels))
    top = ax.secondary_xaxis("top", functions=(lambda r: r * scale, lambda g: g / scale))
    top.set_xlabel("grey levels per pixel (the same L2 norm spread evenly)")
    ax.set_xlim(0, max(radii))
    ax.set_xlabel("L2 radius ([0, 1] image units)")
    ax.set_ylabel("certified accuracy (%)")
    percent_axis(ax, top=105)
    ax.xaxis.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return finish(
        fig, "19_certified_accuracy", "Certified accuracy versus L2 radius",
        f"Share of the {certified.n} attack images that the smoothed classifier (Gaussian noise of standard deviation "
        f"{certified.sigma:g}, then the base model's majority vote; Cohen et al. 2019) classifies correctly with a "
        f"certified L2 radius of at least r (n0 = {certified.n0}, n = {certified.draws:,}, alpha = {certified.alpha:g}; "
        f"abstentions, {pct(certified.abstention_rate)} of the images, count as wrong). A guarantee for the smoothed "
        "classifier, not for the base model answering once. Dots: the report's radii 0.1, 0.25, 0.5 and 1.0.",
    )
