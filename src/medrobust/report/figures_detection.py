"""Detection figures: detection rate and false alarms per detector (the study's detection
accuracy chart), example log lines beside their images, a success summary, and ROC curves."""

from __future__ import annotations

import textwrap

import numpy as np

from medrobust.evaluation.results import AttackOutcome, DetectorOutcome
from medrobust.report.figure import COLORS, ReportFigure, finish, grouped_bars, new_figure, percent_axis
from medrobust.report.figures_images import MAX_IMAGES, show, shown, view_text
from medrobust.report.run_contents import RunContents, pct


def detection_accuracy(detector: DetectorOutcome) -> float:
    """Balanced detection accuracy: the mean of the detection rate over all attacks and the share of
    clean images not flagged, ``(mean_a DR_a + 1 - FPR_clean) / 2`` (a clean and an attacked set of equal size)."""
    rates = list(detector.detection_rate.values())
    mean_rate = float(np.mean(rates)) if rates else 0.0
    return (mean_rate + 1.0 - detector.fpr_clean) / 2


def _union(keys: list[list[str]]) -> list[str]:
    seen: list[str] = []
    for group in keys:
        seen += [k for k in group if k not in seen]
    return seen


def detection_rates(detectors: list[DetectorOutcome]) -> ReportFigure | None:
    if not detectors:
        return None
    attacks = _union([list(d.detection_rate) for d in detectors])
    benign = _union([list(d.fpr_benign) for d in detectors])
    fig = new_figure(max(9.0, 2.0 + 0.9 * (len(attacks) + len(benign)) * max(len(detectors), 1) / 1.5), 3.9)
    left, right = fig.subplots(1, 2, width_ratios=[max(len(attacks), 1), max(len(benign) + 1, 1)])
    grouped_bars(left, attacks, {d.name: [100 * d.detection_rate.get(a, float("nan")) for a in attacks] for d in detectors})
    left.set_title("attacked images flagged (detection rate)", fontsize=10)
    grouped_bars(right, ["clean", *benign],
                 {d.name: [100 * d.fpr_clean] + [100 * d.fpr_benign.get(b, float("nan")) for b in benign] for d in detectors})
    right.set_title("harmless images flagged (false alarms)", fontsize=10)
    for ax in (left, right):
        percent_axis(ax, top=115)
        ax.set_ylabel("%")
        ax.tick_params(axis="x", labelsize=7, rotation=15)
        ax.legend(fontsize=7, loc="upper right")
    return finish(
        fig, "10_detection_accuracy", "Detection accuracy",
        "Left: share of attacked images each detector flags, per attack. Right: share of harmless images it flags: "
        "clean test images and images after benign changes a real pipeline makes (" + ", ".join(benign or ["none"])
        + "). Balanced detection accuracy: " + "; ".join(f"{d.name} {pct(detection_accuracy(d))}" for d in detectors)
        + ".",
    )


def _line_name(line: str) -> str:
    return line.split(": ", 1)[0]


def detection_samples(contents: RunContents, detectors: list[DetectorOutcome],
                      attack: AttackOutcome | None) -> ReportFigure | None:
    """Example images with the detector's study-style log line for each (lines whose image name is
    an example id are drawn beside that example's original and attacked image)."""
    detector = next((d for d in detectors if d.name == "reference" and d.log_lines), None)
    detector = detector or next((d for d in detectors if d.log_lines), None)
    if detector is None:
        return None
    ids = [contents.sample_id(i) for i in range(contents.n_samples())]
    original = contents.sample("original")
    adversarial = contents.sample("adv", attack.key) if attack is not None else None
    lines = detector.log_lines[:MAX_IMAGES]
    has_images = original is not None and adversarial is not None
    fig = new_figure(9.5 if has_images else 8.0, 0.4 + (1.9 if has_images else 0.6) * len(lines))
    axes = np.asarray(fig.subplots(len(lines), 3 if has_images else 1, squeeze=False,
                                   width_ratios=[1, 1, 3] if has_images else None))
    for r, line in enumerate(lines):
        flagged = "Attack Detected" in line
        text_ax = axes[r, -1]
        text_ax.axis("off")
        text_ax.text(0.0, 0.5, "\n".join(textwrap.wrap(line, 60)), va="center", ha="left", fontsize=8.5,
                     family="monospace", color="#b2182b" if flagged else "#1a7837", transform=text_ax.transAxes)
        if has_images:
            name = _line_name(line)
            index = ids.index(name) if name in ids else None
            for c, images in enumerate((original, adversarial)):
                ax = axes[r, c]
                if index is None:
                    ax.axis("off")
                    ax.text(0.5, 0.5, "image not among\nthe examples", ha="center", va="center", fontsize=7,
                            transform=ax.transAxes)
                else:
                    show(ax, shown(contents, images[index]),  # CT: its middle slice through the window
                         "original" if c == 0 else f"{attack.attack.upper()}")  # type: ignore[union-attr]
    where = (f" beside the example's original and its {attack.key} image" if has_images and attack is not None else "")
    return finish(
        fig, "11_detection_samples", "Detection samples",
        f"The first {len(lines)} per-image log lines of the {detector.name} detector in the study's format{where}; red: "
        f"flagged as an attack, green: not flagged.{view_text(contents) if has_images else ''}",
    )


def detection_summary(detectors: list[DetectorOutcome]) -> ReportFigure | None:
    if not detectors:
        return None
    header = ["detector", "attacks flagged\n(mean)", "attacks flagged\n(worst attack)", "false alarms\nclean",
              "false alarms\nbenign (worst)", "detection\naccuracy", "ROC-AUC\n(mean)", "latency\nms/image"]
    rows = []
    for d in detectors:
        rates = list(d.detection_rate.values()) or [float("nan")]
        worst_benign = max(d.fpr_benign.items(), key=lambda kv: kv[1]) if d.fpr_benign else None
        aucs = list(d.roc_auc.values())
        rows.append([d.name, pct(float(np.mean(rates))), pct(min(rates)), pct(d.fpr_clean),
                     f"{pct(worst_benign[1])} ({worst_benign[0]})" if worst_benign else "n/a",
                     pct(detection_accuracy(d)), f"{np.mean(aucs):.3f}" if aucs else "n/a",
                     f"{d.latency_ms_per_image:.1f}"])
    fig = new_figure(10.0, 0.9 + 0.42 * len(rows))
    ax = fig.add_subplot()
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8.5)
    table.scale(1.0, 2.2)
    for (r, _), cell in table.get_celld().items():
        if r == 0:
            cell.set_facecolor("#e8eef6")
            cell.set_text_props(weight="bold")
    return finish(
        fig, "12_detection_summary", "Detection success summary",
        "Per detector: share of attacked images flagged (mean over attacks and for the hardest attack), false alarm "
        "rates on clean images and on benign changes (worst one named), balanced detection accuracy "
        "((mean detection rate + 1 - clean false alarm rate) / 2), mean ROC-AUC and time per image.",
    )


def detector_roc(detectors: list[DetectorOutcome]) -> ReportFigure | None:
    detectors = [d for d in detectors if d.roc]
    if not detectors:
        return None
    n = len(detectors)
    fig = new_figure(0.6 + 3.6 * n, 3.8)
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, detector in zip(axes, detectors):
        for i, (key, curve) in enumerate(detector.roc.items()):
            auc = detector.roc_auc.get(key)
            label = f"{key} (AUC {auc:.3f})" if auc is not None else key
            ax.plot(curve.get("fpr", []), curve.get("tpr", []), color=COLORS[i % len(COLORS)], lw=1.5, label=label)
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
        if detector.fpr_clean > 0 or detector.detection_rate:
            ax.axvline(detector.fpr_clean, color="grey", ls="--", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate (clean images)", ylabel="true positive rate",
               title=detector.name)
        ax.set_aspect("equal")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    return finish(
        fig, "16_detector_roc", "ROC curves of the detectors",
        "Share of attacked images flagged against share of clean images flagged as each detector's threshold varies, "
        "per attack, with the area under the curve; dashed: the false positive rate at the chosen threshold.",
    )
