"""Picture figures from the run's example images (``samples/examples.npz``): original versus
adversarial (and defended) images, amplified perturbations and Grad-CAM overlays."""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from medrobust.evaluation.results import AttackOutcome, DefenseOutcome
from medrobust.report.figure import ReportFigure, finish, new_figure
from medrobust.report.run_contents import RunContents, budget_unit, format_eps

MAX_IMAGES = 4
"""Example images per picture figure."""

MAX_ATTACK_ROWS = 6
"""Attacks shown in the perturbation figure."""


def as_display(image: np.ndarray) -> np.ndarray:
    """One example as a 2-D (grayscale) or H x W x 3 array for ``imshow``."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return np.clip(image, 0.0, 1.0)


DEFAULT_CT_WINDOW = (40.0, 80.0)
"""The window CT examples are shown in when the model names none (level, width in HU: a brain window)."""


def ct_window(contents: RunContents) -> tuple[float, float] | None:
    """The (level, width) in HU CT examples are shown in: the model's first window when its contract
    has CT windows, else :data:`DEFAULT_CT_WINDOW`; None for 8-bit runs (shown as stored)."""
    if budget_unit(contents.metrics) != "HU":
        return None
    from medrobust.specs.contract_names import hu_windows

    intensity = str(((contents.metrics.model or {}).get("contract") or {}).get("intensity") or "")
    try:
        windows = hu_windows(intensity)
    except ValueError:
        windows = None
    return tuple(float(v) for v in windows[0]) if windows else DEFAULT_CT_WINDOW  # type: ignore[return-value]


def view_text(contents: RunContents) -> str:
    """How CT examples are shown, for a caption ("" for 8-bit runs)."""
    window = ct_window(contents)
    if window is None:
        return ""
    return (f" CT volumes are shown by their middle slice, in the window level {window[0]:g} HU / width {window[1]:g} HU"
            f"{' (the model' + chr(39) + 's first window)' if window != DEFAULT_CT_WINDOW else ' (a brain window)'}.")


def middle_slice(image: np.ndarray) -> np.ndarray:
    """A CT example as one 2-D slice: a volume (D, H, W) or (1, D, H, W) by its middle slice."""
    image = np.asarray(image)
    while image.ndim > 2:
        image = image[image.shape[0] // 2] if image.shape[0] > 1 else image[0]
    return image


def shown(contents: RunContents, image: np.ndarray) -> np.ndarray:
    """An example as it is drawn: 8-bit images as stored; CT by its middle slice through the window."""
    window = ct_window(contents)
    if window is None:
        return image
    hu = middle_slice(image).astype(np.float64) * 4095.0 - 1024.0
    level, width = window
    return np.clip((hu - (level - width / 2.0)) / width, 0.0, 1.0).astype(np.float32)


TITLE_CHARACTERS = 26
"""Characters per title line that fit a 2-inch picture column at 8 pt (longer lines are wrapped)."""


def fit_title(text: str, width: int = TITLE_CHARACTERS) -> str:
    """``text`` wrapped line by line to ``width`` characters, so neighbouring titles never overlap
    (long file names are broken too)."""
    return "\n".join(textwrap.fill(line, width, break_long_words=True, break_on_hyphens=False) or line
                     for line in text.split("\n"))


def show(ax: Axes, image: np.ndarray, title: str, colour: str = "black") -> None:
    ax.imshow(as_display(image), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(fit_title(title), fontsize=8, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])


def shown_cam(contents: RunContents, cam: np.ndarray) -> np.ndarray:
    """A Grad-CAM heatmap as drawn over :func:`shown`'s image (CT: the middle slice's)."""
    return middle_slice(cam) if ct_window(contents) is not None else cam


def _verdict_colour(true: str, predicted: str) -> str:
    return "black" if true == predicted else "#b2182b"


def _rows_figure(contents: RunContents, rows: list[tuple[str, np.ndarray, str]], n: int) -> Figure:
    """A grid with one row per image set (label, images, prediction key) and one column per example;
    the first row's titles also give the image and its true class."""
    fig = new_figure(1.0 + 2.0 * n, 0.4 + 2.5 * len(rows))  # room for titles of up to four lines
    axes = np.asarray(fig.subplots(len(rows), n, squeeze=False))
    for r, (label, images, pred_key) in enumerate(rows):
        for i in range(n):
            true = contents.true_label(i)
            predicted = contents.predicted(pred_key, i)
            title = f"predicted: {predicted}"
            if r == 0:
                title = f"{contents.sample_id(i)}, true: {true}\n{title}"
            show(axes[r, i], shown(contents, images[i]), title, _verdict_colour(true, predicted))
        axes[r, 0].set_ylabel(label, fontsize=9)
    return fig


def original_vs_attack(contents: RunContents, attack: AttackOutcome) -> ReportFigure | None:
    original, adversarial = contents.sample("original"), contents.sample("adv", attack.key)
    if original is None or adversarial is None:
        return None
    n = min(MAX_IMAGES, len(original))
    fig = _rows_figure(contents, [("original", original, "original"),
                                  (attack.attack.upper(), adversarial, contents.attack_sample_key(attack))], n)
    unit = budget_unit(contents.metrics)
    return finish(
        fig, "04_original_vs_attack", "Original vs adversarial image",
        f"{n} test images (top) and the same images after {attack.attack.upper()} at eps = "
        f"{format_eps(attack.eps, unit)} ({attack.source}; bottom), with the model's prediction; red marks a wrong "
        f"prediction. The perturbation is at most {format_eps(attack.eps, unit)} per {'voxel' if unit == 'HU' else 'pixel'}"
        f" (measured mean SSIM {attack.perturbation.ssim_mean:.3f}).{view_text(contents)}",
    )


def original_attack_defended(contents: RunContents, attack: AttackOutcome, defense: DefenseOutcome) -> ReportFigure | None:
    original, adversarial = contents.sample("original"), contents.sample("adv", attack.key)
    defended = contents.sample("def", defense.name, attack.key)
    if original is None or adversarial is None or defended is None:
        return None
    n = min(MAX_IMAGES, len(original))
    fig = _rows_figure(contents, [
        ("original", original, "original"),
        (attack.attack.upper(), adversarial, contents.attack_sample_key(attack)),
        ("defended", defended, contents.defense_sample_key(defense, attack.key)),
    ], n)
    return finish(
        fig, "07_original_attack_defended", "Original vs adversarial vs defended",
        f"{n} test images: original (top), after {attack.key} ({attack.source}; middle) and after the defense "
        f"{defense.name} applied to the adversarial image (bottom), with the model's prediction; red marks a wrong "
        f"prediction.{view_text(contents)}",
    )


def perturbation_heatmaps(contents: RunContents, attacks: list[AttackOutcome]) -> ReportFigure | None:
    """(adversarial - original) / eps per attack: the colour scale spans exactly the budget."""
    original = contents.sample("original")
    rows = [(a, contents.sample("adv", a.key)) for a in attacks if a.eps > 0]
    rows = [(a, adv) for a, adv in rows if adv is not None][:MAX_ATTACK_ROWS]
    if original is None or not rows:
        return None
    n = min(MAX_IMAGES, len(original))
    fig = new_figure(1.6 + 1.9 * n, 0.5 + 1.9 * len(rows))
    axes = np.asarray(fig.subplots(len(rows), n, squeeze=False))
    image = None
    ct = ct_window(contents) is not None
    top_hu = max(a.eps for a, _ in rows) * 4095.0
    for r, (attack, adversarial) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            if ct:  # the middle slice's change in HU, on one scale for every row
                delta_hu = (middle_slice(adversarial[i]).astype(np.float64) - middle_slice(original[i])) * 4095.0
                image = ax.imshow(delta_hu, cmap="RdBu_r", vmin=-top_hu, vmax=top_hu, interpolation="nearest")
            else:
                delta = as_display(adversarial[i]) - as_display(original[i])
                if delta.ndim == 3:
                    delta = delta.mean(axis=-1)
                image = ax.imshow(delta / attack.eps, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(fit_title(f"{contents.sample_id(i)} ({contents.true_label(i)})", 22), fontsize=8)
        axes[r, 0].set_ylabel(textwrap.fill(attack.key, 16), fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="perturbation (HU)" if ct else "perturbation / eps")
    if ct:
        budgets = "; ".join(f"{a.key}: eps = {format_eps(a.eps, 'HU')}" for a, _ in rows)
        return finish(
            fig, "13_perturbation_heatmaps", "Perturbations in HU",
            f"The change each attack made to the middle slice of {n} test volumes, adversarial minus original, in HU "
            f"on one colour scale of +-{top_hu:.3g} HU (red: denser, blue: less dense, white: unchanged). "
            f"Budgets: {budgets}.")
    factors = "; ".join(f"{a.key}: x{1 / a.eps:.1f} (eps = {format_eps(a.eps)})" for a, _ in rows)
    return finish(
        fig, "13_perturbation_heatmaps", "Amplified perturbations",
        f"The change each attack made to {n} test images, adversarial minus original, amplified by 1/eps so that the "
        f"colour scale spans the whole budget (red: brighter, blue: darker, white: unchanged). Factors: {factors}.",
    )


def gradcam(contents: RunContents, attack: AttackOutcome) -> ReportFigure | None:
    """Where the model looks (Grad-CAM) on original and adversarial images; ``None`` without heatmaps."""
    original, adversarial = contents.sample("original"), contents.sample("adv", attack.key)
    cam_original, cam_adversarial = contents.sample("cam", "original"), contents.sample("cam", "adv", attack.key)
    if original is None or adversarial is None or cam_original is None or cam_adversarial is None:
        return None
    n = min(MAX_IMAGES, len(original))
    fig = new_figure(1.0 + 2.0 * n, 4.6)
    axes = np.asarray(fig.subplots(2, n, squeeze=False))
    adv_key = contents.attack_sample_key(attack)
    for i in range(n):
        true = contents.true_label(i)
        for r, (images, cams, key, label) in enumerate(((original, cam_original, "original", "original"),
                                                        (adversarial, cam_adversarial, adv_key, attack.attack.upper()))):
            predicted = contents.predicted(key, i)
            title = f"{contents.sample_id(i)}, true: {true}\n" if r == 0 else f"{label}\n"
            show(axes[r, i], shown(contents, images[i]), title + f"predicted: {predicted}",
                 _verdict_colour(true, predicted))
            axes[r, i].imshow(np.clip(as_display(shown_cam(contents, cams[i])), 0, 1), cmap="jet", alpha=0.4, vmin=0, vmax=1,
                              interpolation="bilinear")
    return finish(
        fig, "14_gradcam", "Grad-CAM on original and adversarial images",
        f"Grad-CAM heatmaps (red: regions that drive the predicted class most) over {n} test images before (top) and "
        f"after {attack.key} ({attack.source}; bottom). An attack that moves the heatmap away from the lungs changes "
        "what the model bases its answer on, not only the answer.",
    )
