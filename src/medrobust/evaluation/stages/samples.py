"""The samples stage: a few example images for the report's pictures (``samples/examples.npz``,
:mod:`medrobust.evaluation.samples` gives its keys) — originals, each white-box attack's
adversarial images, each defense's output on both, the model's decisions and Grad-CAM heatmaps.
Written once; a resumed run keeps it."""

from __future__ import annotations

import numpy as np
import torch

from medrobust.evaluation.context import RunContext
from medrobust.evaluation.samples import SAMPLES_FILE, save_samples, stage_index
from medrobust.evaluation.stage_keys import defense_folder
from medrobust.evaluation.stages.attacks import Attacks
from medrobust.evaluation.stages.baseline import stratified_subset
from medrobust.execution.pixels import from_stored


def run(ctx: RunContext, attacks: Attacks) -> None:
    """Write ``samples/examples.npz``, unless already written: ``sample_images`` images of the
    attack subset (classes in turn), each white-box attack's versions of them, each defense's
    output on both, the model's decisions and Grad-CAM heatmaps.

    Args:
        ctx: the run's context.
        attacks: the attack stage's outcome (its white-box runs' images).
    """
    from medrobust.defenses.registry import build_defense
    from medrobust.evaluation.gradcam import gradcam

    if (ctx.root / SAMPLES_FILE).is_file():
        return
    model, device, y = ctx.model, ctx.device, ctx.labels
    pick = stratified_subset(y, min(ctx.config.sample_images, len(y)))
    x = from_stored(ctx.inputs.take(pick, ctx.batch_size, "clean"))
    ids = ctx.inputs.summary["ids"]
    arrays: dict[str, np.ndarray] = {
        "ids": np.array([str(ids[i]) for i in pick]), "labels": y[pick], "classes": np.array(ctx.classes),
        "original": x[:, 0].numpy(), "pred__original": model.predict(x.to(device)).cpu().numpy(),
        **stage_index({run.key: run.stage_key.folder for run in attacks.white}),
    }
    cam = gradcam(model, x.to(device))
    if cam is not None:
        arrays["cam__original"] = cam
    adversarial = {}
    for run in attacks.white:
        a = run.stage_key.folder
        adversarial[a] = from_stored(run.stage.take(pick, ctx.batch_size))
        arrays[f"adv__{a}"] = adversarial[a][:, 0].numpy()
        arrays[f"pred__adv__{a}"] = run.pred[pick]
        cam = gradcam(model, adversarial[a].to(device))
        if cam is not None:
            arrays[f"cam__adv__{a}"] = cam
    torch.manual_seed(ctx.seed)
    for spec in ctx.config.defenses:
        defense = build_defense(spec)
        for which, images in {"clean": x, **adversarial}.items():
            with torch.no_grad():
                defended = defense(images.to(device)).cpu()
            key = f"def__{defense_folder(spec)}__{which}"
            arrays[key] = defended[:, 0].numpy()
            arrays[f"pred__{key}"] = model.predict(defended.to(device)).cpu().numpy()
    save_samples(ctx.root, arrays)
