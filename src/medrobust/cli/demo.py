"""`medrobust demo`: the embedded default experiment, end to end, in one command."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from medrobust.cli.app import app, user_errors
from medrobust.cli.evaluate import resume_line


@app.command("demo")
@user_errors(on_interrupt=resume_line)
def demo(
    quick: Annotated[bool, typer.Option("--quick", help="A smaller run (about 2 minutes on 2 CPU cores).")] = False,
    output_dir: Annotated[str, typer.Option("--output-dir", help="Where the run folder goes.")] = "runs",
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda")] = None,
    smoothed: Annotated[bool, typer.Option(
        "--smoothed", help="Train the model under Gaussian noise (sigma 0.25) and certify it by randomized smoothing "
        "(certified accuracy at L2 radii 0.1-1.0 beside the scorecard; runs/demo-smoothed).")] = False,
    modality: Annotated[str, typer.Option(
        "--modality", help="cxr: chest radiographs (the default); ct: head-CT volumes in HU, a 3-D CNN, budgets in HU "
        "(runs/demo-ct).")] = "cxr",
) -> None:
    """Run the demo experiment on synthetic chest radiographs and write runs/demo/report.html.

    Phantoms at 64 px (--quick: 48 px); DenseNet121 trained from scratch; SIA, PGD and MI-FGSM at 8/255,
    white-box and transferred from a small CNN; the JPEG+TV defense against non-adaptive and
    adaptive attackers; the reference and squeeze detectors. With --smoothed, the model is trained
    under Gaussian noise and certified by randomized smoothing. With --modality ct, the same study on
    head-CT phantoms (normal, haemorrhage, infarct) in HU: a small 3-D CNN on brain and subdural
    windows, APGD-CE at 2-16 HU, TV in 3-D, both detectors (runs/demo-ct/report.html). Started
    again, it resumes.
    """
    from medrobust.cli.evaluate import run_experiment
    from medrobust.evaluation.demo_config import demo_config

    choice = modality.strip().lower()
    if choice not in ("cxr", "ct"):
        raise typer.BadParameter(f"{modality!r}: use cxr (chest radiographs) or ct (head CT in HU)",
                                 param_hint="--modality")
    if choice == "ct" and smoothed:
        raise typer.BadParameter("the smoothed demo runs on the chest radiographs; leave out --smoothed or "
                                 "--modality ct", param_hint="--smoothed")
    overrides = {"output_dir": output_dir, **({"device": device} if device else {})}
    closing = OWN_CT_MODEL_SENTENCE if choice == "ct" else OWN_MODEL_SENTENCE
    run_experiment(demo_config(quick, smoothed, choice, **overrides), closing=closing)


OWN_MODEL_SENTENCE = ("On your own model: medrobust evaluate --model MODEL.onnx --classes Normal,Pneumonia,Pneumothorax "
                      "--intensity unit --data IMAGES/ --preset quick (IMAGES/ holds one folder of images per class; "
                      "--intensity is the input scaling its training used: unit, imagenet, symmetric or byte; .pt, "
                      ".keras and medrobust checkpoints load too).")
OWN_CT_MODEL_SENTENCE = ("On your own CT model: medrobust evaluate --model MODEL.onnx --classes normal,haemorrhage,infarct "
                         "--window 40,80 --data SERIES/ --preset quick (SERIES/ holds one folder per class of DICOM "
                         "series folders or NIfTI volumes; --window is each CT window its training used, level,width "
                         "in HU, repeatable).")
