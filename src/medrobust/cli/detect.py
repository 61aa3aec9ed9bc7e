"""`medrobust detect`: is an image attacked? The study's detector (needs the originals) or
the reference-free squeeze detector (needs clean images to calibrate on).

Input images are read from a folder (recursively), as grey images in [0, 1], resized to the
model's input size when it has one. For the reference detector each input file is paired
with the file at the same relative path under ``--reference``; failing that, with the one
file whose relative path differs only in its suffix (``a/b.png`` pairs with ``a/b.jpeg``).
Unreadable and unpaired files are listed and skipped, and the exit status is then 3.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from medrobust.cli.app import (
    ArchOption,
    ClassesOption,
    InputSizeOption,
    IntensityOption,
    OutputKindOption,
    TrustPickleOption,
    app,
    console,
    load_cli_model,
    progress_bar,
    user_errors,
)

if TYPE_CHECKING:
    import torch

    from medrobust.detection.base import DetectionResult, Detector
    from medrobust.models.classifier import Classifier

log = logging.getLogger(__name__)


@dataclass
class _Pair:
    name: str
    input: Path
    reference: Path | None


def _image_files(root: Path) -> list[Path]:
    from medrobust.data.io import is_image_file

    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder of images; pass a folder (it is searched recursively)")
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p)
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _pair_files(inputs: Path, reference: Path | None, skipped: list[str]) -> list[_Pair]:
    files = _image_files(inputs)
    if not files:
        raise FileNotFoundError(f"{inputs}: holds no image files (.png, .jpg, .jpeg, .dcm)")
    if reference is None:
        return [_Pair(f.relative_to(inputs).as_posix(), f, None) for f in files]
    refs = {p.relative_to(reference).as_posix(): p for p in _image_files(reference)}
    by_stem: dict[str, list[Path]] = {}
    for rel, p in refs.items():
        by_stem.setdefault(rel.rsplit(".", 1)[0], []).append(p)
    pairs = []
    for f in files:
        rel = f.relative_to(inputs).as_posix()
        match = refs.get(rel)
        if match is None:
            candidates = by_stem.get(rel.rsplit(".", 1)[0], [])
            if len(candidates) == 1:
                match = candidates[0]
            else:
                why = ("several originals differ only in suffix" if candidates
                       else "no original at the same relative path")
                skipped.append(f"{f}: unpaired ({why} under {reference})")
                continue
        pairs.append(_Pair(rel, f, match))
    return pairs


class _ImageReader:
    """Reads grey images as (C, H, W) tensors at one size, recording unreadable files."""

    def __init__(self, model: "Classifier", size: Optional[int]) -> None:
        self.channels = int(getattr(model, "input_channels", 1))
        fixed = getattr(model, "input_size", None)
        self.size: tuple[int, int] | None = tuple(fixed) if fixed else ((size, size) if size else None)

    def read(self, path: Path) -> "torch.Tensor":
        import torch

        from medrobust.data.io import read_image
        from medrobust.data.resize import resize_image

        image = read_image(path)
        if self.size is None:
            self.size = tuple(image.shape)  # the first image fixes the size for all
            log.info("images are compared at %dx%d (the first image's size; --size to choose)", *self.size)
        image = resize_image(image, self.size)
        t = torch.from_numpy(image).float()[None]
        return t.expand(self.channels, -1, -1).contiguous() if self.channels != 1 else t


def _read_batches(pairs: list[_Pair], reader: _ImageReader, batch_size: int, skipped: list[str]):
    """Yield (names, inputs (B,C,H,W), references or None) over readable pairs."""
    import torch

    from medrobust.data.errors import ImageReadError

    names: list[str] = []
    xs: list[torch.Tensor] = []
    refs: list[torch.Tensor] = []
    for pair in pairs:
        try:
            x = reader.read(pair.input)
            r = reader.read(pair.reference) if pair.reference is not None else None
        except ImageReadError as err:
            skipped.append(str(err))
            continue
        names.append(pair.name)
        xs.append(x)
        if r is not None:
            refs.append(r)
        if len(xs) == batch_size:
            yield names, torch.stack(xs), torch.stack(refs) if refs else None
            names, xs, refs = [], [], []
    if xs:
        yield names, torch.stack(xs), torch.stack(refs) if refs else None


class _NoProgress:
    """Stands in for the progress bar when stdout carries JSON lines."""

    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def advance(self, *args: object, **kwargs: object) -> None:
        return None


def _progress(enabled: bool):
    return progress_bar() if enabled else _NoProgress()


def _calibrate(detector: "Detector", model: "Classifier", folder: Path, reader: _ImageReader, batch_size: int,
               fpr: float, skipped: list[str], show_progress: bool) -> None:
    import numpy as np

    pairs = _pair_files(folder, None, skipped)
    scores = []
    with _progress(show_progress) as bar:
        task = bar.add_task("calibrating", total=len(pairs))
        for names, x, _ in _read_batches(pairs, reader, batch_size, skipped):
            scores.append(detector.score(model, x))
            bar.advance(task, len(names))
    if not scores:
        raise ValueError(f"{folder}: no readable clean images to calibrate the squeeze detector on")
    detector.calibrate(np.concatenate(scores), fpr)  # type: ignore[attr-defined]


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
    intensity: IntensityOption = None,
    output_kind: OutputKindOption = None,
    arch: ArchOption = None,
    trust_pickle: TrustPickleOption = False,
) -> None:
    """Flag attacked images: the study's detector against originals, or feature squeezing without them."""
    from medrobust.detection.registry import build_detector

    detector = build_detector(detector_name)
    if detector.requires_reference and reference is None:
        raise ValueError(f"the {detector.name} detector compares each image with its original: pass --reference DIR "
                         "(originals at the same relative paths), or use --detector squeeze, which needs none")
    if detector.name == "squeeze" and calibrate is None:
        raise ValueError("the squeeze detector needs clean images to set its threshold: pass --calibrate DIR "
                         "(clean images like the ones checked; --fpr sets the target false positive rate)")
    if not detector.requires_reference and reference is not None:
        log.warning("the %s detector does not use --reference; ignoring %s", detector.name, reference)
        reference = None

    model = load_cli_model(model_path, classes, input_size, intensity, output_kind, arch, trust_pickle)
    skipped: list[str] = []
    reader = _ImageReader(model, size)
    if calibrate is not None and detector.name == "squeeze":
        _calibrate(detector, model, calibrate, reader, batch_size, fpr, skipped, show_progress=not as_json)
    else:
        detector.fit(model, None)  # type: ignore[arg-type]  (the reference detector calibrates nothing)

    pairs = _pair_files(inputs, reference, skipped)
    results: list[DetectionResult] = []
    with _progress(not as_json) as bar:
        task = bar.add_task(f"{detector.name} detector", total=len(pairs))
        for names, x, ref in _read_batches(pairs, reader, batch_size, skipped):
            result = detector.detect(model, x, ref, names=names)
            results.append(result)
            for i in range(len(result)):
                if as_json:
                    typer.echo(json.dumps(result.image_record(i), default=str, allow_nan=False))
                else:
                    console.print(result.details["line"][i], markup=False, highlight=False)
            bar.advance(task, len(names))
    if not results:
        raise ValueError(f"{inputs}: no readable images" + (" with readable originals" if reference else "")
                         + (f" ({len(skipped)} skipped: {skipped[0]})" if skipped else ""))
    summary = _summary(detector, results, skipped)
    if as_json:
        typer.echo(json.dumps({"summary": summary}, default=str, allow_nan=False))
    else:
        _print_summary(summary)
    if skipped:
        raise typer.Exit(code=3)


def _summary(detector: "Detector", results: list["DetectionResult"], skipped: list[str]) -> dict[str, object]:
    n = sum(len(r) for r in results)
    flagged = sum(r.n_flagged for r in results)
    by_reason: Counter[str] = Counter()
    for r in results:
        by_reason.update(r.reason_counts())
    return {"detector": detector.describe(), "n_images": n, "n_flagged": flagged,
            "flagged_fraction": flagged / n if n else 0.0, "by_reason": dict(sorted(by_reason.items())),
            "skipped": skipped}


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
