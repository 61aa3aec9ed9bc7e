"""`medrobust detect`: is an image attacked? The study's detector (needs the originals) or
the reference-free squeeze detector (needs clean images to calibrate on), through
:func:`medrobust.detect`.

Input images are read from a folder (recursively), as grey images in [0, 1], at the model's
input size when it has one. For the reference detector each input file is paired with the
file at the same relative path under ``--reference``; failing that, with the one file whose
relative path differs only in its suffix (``a/b.png`` pairs with ``a/b.jpeg``). Unreadable and
unpaired files are listed and skipped, and the exit status is then 3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from medrobust.cli.app import (
    ArchOption,
    ChannelsLastOption,
    ChannelsOption,
    ClassesOption,
    InputSizeOption,
    IntensityOption,
    OutputKindOption,
    OutputsOption,
    TrustPickleOption,
    WindowOption,
    app,
    console,
    contract_from_options,
    load_cli_model,
    user_errors,
)
from medrobust.cli.progress import CliProgress


@app.command("detect")
@user_errors
def detect(
    model_path: Annotated[Path, typer.Option("--model", help="The model (checkpoint, TorchScript, .keras, .onnx...).")],
    inputs: Annotated[Path, typer.Option("--input", help="Folder of images to check (searched recursively).")],
    reference: Annotated[Optional[Path], typer.Option("--reference", help="Folder of the originals, same relative "
                                                      "paths (the reference detector needs it).")] = None,
    detector_name: Annotated[str, typer.Option("--detector", help="reference (the study's) | squeeze "
                                               "(reference-free feature squeezing; squeezers as in "
                                               "squeeze:squeezers=bits:bits=5;median:size=2).")] = "reference",
    calibrate: Annotated[Optional[Path], typer.Option("--calibrate", help="Folder of clean images to calibrate "
                                                      "the squeeze detector's threshold on.")] = None,
    fpr: Annotated[float, typer.Option("--fpr", min=0.0, max=0.99, help="Target false positive rate of the "
                                       "squeeze detector on the clean images.")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per image, then a summary.")] = False,
    size: Annotated[Optional[int], typer.Option("--size", min=8, help="Image size when the model does not fix "
                                                "one (default: the first image's size).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    classes: ClassesOption = None,
    input_size: InputSizeOption = None,
    channels: ChannelsOption = None,
    intensity: IntensityOption = None,
    window: WindowOption = None,
    output_kind: OutputKindOption = None,
    arch: ArchOption = None,
    trust_pickle: TrustPickleOption = False,
    outputs: OutputsOption = None,
    channels_last: ChannelsLastOption = None,
) -> None:
    """Flag attacked images: the study's detector against originals, or feature squeezing without them."""
    import medrobust as mr
    from medrobust.layer.detect import detector_to_run

    detector_to_run(detector_name, reference, calibrate)  # a misspelt detector before the model loads
    model = load_cli_model(model_path, contract_from_options(model_path, classes, input_size, channels, intensity,
                                                          output_kind, arch, trust_pickle, outputs, channels_last, window))

    def show(result) -> None:
        for i in range(len(result)):
            if as_json:
                typer.echo(json.dumps(result.image_record(i), default=str, allow_nan=False))
            else:
                console.print(result.details["line"][i], markup=False, highlight=False)

    with CliProgress(enabled=not as_json) as progress:
        detection = mr.detect(model, inputs, reference, detector_name, calibration=calibrate, fpr=fpr, size=size,
                              batch_size=batch_size, progress=progress, on_batch=show)
    summary = detection.summary()
    if as_json:
        typer.echo(json.dumps({"summary": summary}, default=str, allow_nan=False))
    else:
        _print_summary(summary)
    if detection.skipped:
        raise typer.Exit(code=3)


def _print_summary(summary: dict[str, object]) -> None:
    n, flagged = summary["n_images"], summary["n_flagged"]
    console.print(f"flagged {flagged} of {n} images ({summary['flagged_fraction']:.1%})", highlight=False)
    by_reason = summary["by_reason"]
    if by_reason:
        console.print("by reason: " + ", ".join(f"{k} {v}" for k, v in by_reason.items()),  # type: ignore[union-attr]
                      markup=False, highlight=False)
    calibration = summary["detector"].get("calibration")  # type: ignore[union-attr]
    if calibration:
        console.print(f"threshold {calibration['threshold']:.4g} calibrated on {calibration['n_clean']} clean images "
                      f"(FPR there {calibration['realised_fpr']:.1%}, target {calibration['target_fpr']:.1%})",
                      highlight=False)
    skipped = summary["skipped"]
    if skipped:
        console.print(f"{len(skipped)} file(s) skipped:", highlight=False)  # type: ignore[arg-type]
        for s in skipped:  # type: ignore[union-attr]
            console.print(f"  {s}", markup=False, highlight=False)
