"""Figures of what the classifier answers: confusion matrices, learning curves, per-class
accuracy before and after attacks and defenses (the study's figures 1-3, 5, 6, 8, 9)."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes

from medrobust.evaluation.results import AttackOutcome, ClassificationReport, DefenseOutcome, RunMetrics
from medrobust.report.figure import COLORS, ReportFigure, finish, grouped_bars, new_figure, percent_axis
from medrobust.report.run_contents import format_eps, pct, percent_or_nan


def draw_confusion(ax: Axes, report: ClassificationReport, title: str) -> None:
    """A confusion matrix (rows: true class, columns: predicted), coloured by the share of each
    true class, each cell labelled with its count and that share."""
    counts = np.asarray(report.confusion_matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    k = len(report.classes)
    for i in range(k):
        for j in range(k):
            colour = "white" if shares[i, j] > 0.55 else "black"
            ax.text(j, i, f"{int(counts[i, j])}\n{100 * shares[i, j]:.0f}%", ha="center", va="center",
                    fontsize=9 if k <= 5 else 7, color=colour)
    ax.set_xticks(range(k), report.classes, rotation=20 if k > 2 else 0)
    ax.set_yticks(range(k), report.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {pct(report.accuracy)}, n = {report.n}", fontsize=10)


def _confusion_figure(report: ClassificationReport, figure_id: str, title: str, panel: str, caption: str) -> ReportFigure:
    k = len(report.classes)
    size = 1.2 + 1.1 * max(k, 3)
    fig = new_figure(size, size * 0.9)
    draw_confusion(fig.add_subplot(), report, panel)
    return finish(fig, figure_id, title, caption)


def baseline_confusion(metrics: RunMetrics) -> ReportFigure:
    report = metrics.baseline
    return _confusion_figure(
        report, "01_baseline_confusion", "Baseline confusion matrix", "clean test images",
        f"Predictions of the model on {report.n} clean test images, before any attack. Rows are the true class, "
        "columns the predicted class; each cell gives the count and the share of its true class.",
    )


def training_curves(history: list[dict[str, float]]) -> ReportFigure | None:
    """Training and validation accuracy and loss per epoch; ``None`` when there is no history."""
    if not history:
        return None
    epochs = [r["epoch"] for r in history]
    fig = new_figure(9.0, 3.4)
    acc_ax, loss_ax = fig.subplots(1, 2)
    acc_ax.plot(epochs, [100 * r["train_accuracy"] for r in history], "o-", ms=3, color=COLORS[0], label="training")
    acc_ax.plot(epochs, [100 * r["val_accuracy"] for r in history], "s-", ms=3, color=COLORS[1], label="validation")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    percent_axis(acc_ax)
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", ms=3, color=COLORS[0], label="training")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], "s-", ms=3, color=COLORS[1], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    loss_ax.yaxis.grid(True, alpha=0.3)
    for ax in (acc_ax, loss_ax):
        ax.legend(fontsize=8)
    best = min(history, key=lambda r: r["val_loss"])
    return finish(
        fig, "02_training_curves", "Training and validation accuracy and loss",
        f"Accuracy and loss of the model per epoch on the training and validation sets over {len(history)} epochs "
        f"(from model/model.json). Lowest validation loss at epoch {best['epoch']:g} "
        f"(validation accuracy {pct(best['val_accuracy'])}).",
    )


def classwise_accuracy(metrics: RunMetrics) -> ReportFigure:
    report = metrics.baseline
    fig = new_figure(6.0, 3.4)
    ax = fig.add_subplot()
    grouped_bars(ax, report.classes, {
        "accuracy within class (sensitivity)": [percent_or_nan(report.per_class[c].recall) for c in report.classes],
        "specificity": [percent_or_nan(report.per_class[c].specificity) for c in report.classes],
    })
    percent_axis(ax, top=110)
    ax.set_ylabel("%")
    ax.legend(fontsize=8, loc="lower right")
    return finish(
        fig, "03_classwise_accuracy", "Class-wise accuracy",
        f"Share of each class's clean test images the model classifies correctly (sensitivity, recall) and its "
        f"specificity (share of the other classes' images not called this class), on {report.n} clean test images.",
    )


def confusion_after_attack(attack: AttackOutcome) -> ReportFigure:
    report = attack.adversarial
    return _confusion_figure(
        report, "05_confusion_after_attack", "Confusion matrix after attack",
        f"after {attack.key}",
        f"Predictions on the {report.n} attack images after {attack.attack.upper()} at eps = {format_eps(attack.eps)} "
        f"({attack.source}); accuracy {pct(attack.clean.accuracy)} on the same images before the attack.",
    )


def accuracy_drop_per_class(attacks: list[AttackOutcome], classes: list[str]) -> ReportFigure | None:
    if not attacks:
        return None
    fig = new_figure(max(6.0, 1.2 + 0.5 * len(attacks) * len(classes)), 3.6)
    ax = fig.add_subplot()
    grouped_bars(ax, classes, {a.key: [a.accuracy_drop_pp.get(c, float("nan")) for c in classes] for a in attacks})
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("accuracy drop (percentage points)")
    ax.yaxis.grid(True, alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, ncols=min(len(attacks), 3))
    ax.margins(y=0.15)
    return finish(
        fig, "06_accuracy_drop_per_class", "Accuracy drop per class",
        "Per class, accuracy on the attack images before minus after each attack, in percentage points (higher is "
        "worse). Attacks: " + "; ".join(f"{a.key} ({a.source}, n = {a.adversarial.n})" for a in attacks) + ".",
    )


def defended_attack_report(defense: DefenseOutcome, attack: AttackOutcome | None) -> ClassificationReport | None:
    """The defended model's full report on an attack's images, if the run recorded one.

    ``DefenseOutcome`` holds only accuracies for attacked images (``non_adaptive``); a per-attack
    report (proposed field ``non_adaptive_reports``) is used when a future schema carries it."""
    reports = getattr(defense, "non_adaptive_reports", None)
    if attack is None or not isinstance(reports, dict):
        return None
    return reports.get(attack.key)


def confusion_after_defense(defense: DefenseOutcome, attack: AttackOutcome | None) -> ReportFigure:
    attacked = defended_attack_report(defense, attack)
    if attacked is not None and attack is not None:
        fig = new_figure(9.0, 4.0)
        left, right = fig.subplots(1, 2)
        draw_confusion(left, defense.clean, "clean images, defended")
        draw_confusion(right, attacked, f"{attack.key}, defended")
        what = f"on {defense.clean.n} clean test images (left) and on the {attacked.n} images of {attack.key} (right)"
    else:
        fig = new_figure(4.6, 4.1)
        draw_confusion(fig.add_subplot(), defense.clean, "clean images, defended")
        what = (f"on {defense.clean.n} clean test images (the run records only the accuracy, not the confusion "
                "matrix, of the defended model on attacked images)")
    return finish(
        fig, "08_confusion_after_defense", "Confusion matrix after defense",
        f"Predictions of the model behind the defense {defense.name} {what}. "
        f"On clean images the defense costs {defense.clean_cost_pp:.1f} points of accuracy.",
    )


def classwise_after_defense(metrics: RunMetrics, defense: DefenseOutcome, attack: AttackOutcome | None) -> ReportFigure:
    classes = metrics.baseline.classes
    series = {"clean, undefended": [percent_or_nan(metrics.baseline.per_class[c].recall) for c in classes],
              "clean, defended": [percent_or_nan(defense.clean.per_class[c].recall) for c in classes]}
    attacked = defended_attack_report(defense, attack)
    caption = (f"Share of each class classified correctly with and without the defense {defense.name}: on clean test "
               f"images (n = {defense.clean.n})")
    overall = None
    if attack is not None:
        series[f"{attack.key}, undefended"] = [percent_or_nan(attack.adversarial.per_class[c].recall) for c in classes]
        caption += f" and on the images of {attack.key} (n = {attack.adversarial.n})"
        if attacked is not None:
            series[f"{attack.key}, defended"] = [percent_or_nan(attacked.per_class[c].recall) for c in classes]
        else:
            overall = defense.non_adaptive.get(attack.key)
            caption += ". Per-class accuracy of the defended model on attacked images is not recorded by this run"
            if overall is not None:
                caption += "; the dashed line is its accuracy over all classes"
    fig = new_figure(7.0, 3.6)
    ax = fig.add_subplot()
    grouped_bars(ax, classes, series)
    if overall is not None and attack is not None:
        ax.axhline(100 * overall, color="black", ls="--", lw=1, label=f"{attack.key}, defended (all classes)")
    percent_axis(ax, top=115)
    ax.set_ylabel("accuracy within class (%)")
    ax.legend(fontsize=7, ncols=2, loc="upper center")
    return finish(fig, "09_classwise_after_defense", "Class-wise accuracy after defense", caption + ".")
