"""Write phantoms to disk: a class-per-folder tree of 8-bit PNGs plus ``manifest.csv``,
and a gallery grid for looking at the signs."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medrobust.data.io import write_png
from medrobust.data.phantom.dataset import PhantomDataset
from medrobust.data.phantom.params import PHANTOM_CLASSES, sample_params
from medrobust.data.phantom.render import render_phantom
from medrobust.files.atomic_files import atomic_write_text

MANIFEST_FIRST_COLUMNS = ["path", "label", "split", "id", "seed", "size"]


def write_phantom_dataset(
    out: str | Path,
    per_class: int,
    size: int = 128,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Render ``per_class`` phantoms of each class into ``out/<Class>/<id>.png`` and write
    ``out/manifest.csv`` (path relative to ``out``, label, split, id, seed, size, then every
    generator parameter). ``progress`` is called with the number of images done so far.
    Returns the manifest's path."""
    out = Path(out)
    dataset = PhantomDataset(per_class=per_class, size=size, seed=seed)
    rows: list[dict[str, object]] = []
    for i, record in enumerate(dataset.records):
        params = dataset.params(i)
        rel = Path(dataset.classes[record.label]) / f"{record.id}.png"
        write_png(out / rel, render_phantom(params, size), bits=8)
        rows.append(
            {"path": rel.as_posix(), "label": dataset.classes[record.label], "split": record.split,
             "id": record.id, "seed": seed, "size": size, **params.to_record()}
        )
        if progress is not None:
            progress(i + 1)
    return write_manifest(out, rows)


def write_manifest(out: Path, rows: list[dict], first_columns: list[str] = MANIFEST_FIRST_COLUMNS) -> Path:
    """``out/manifest.csv``: one row per generated image or volume (its file, class, seed and
    parameters), ``first_columns`` first, then every other key in the order first seen; atomic."""
    columns = list(first_columns)
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(out / "manifest.csv", text.getvalue())


def phantom_gallery(per_class: int = 6, size: int = 192, seed: int = 0) -> Image.Image:
    """A grid with one row per class (Normal, Pneumonia, Pneumothorax), labelled on the left."""
    label_width = 110
    pad = 4
    width = label_width + per_class * (size + pad)
    height = len(PHANTOM_CLASSES) * (size + pad)
    canvas = Image.new("L", (width, height), color=255)
    draw = ImageDraw.Draw(canvas)
    for label, name in enumerate(PHANTOM_CLASSES):
        top = label * (size + pad)
        draw.text((6, top + size // 2 - 6), name, fill=0)
        for k in range(per_class):
            params = sample_params(np.random.default_rng([seed, label, k]), label)
            image = render_phantom(params, size)
            tile = Image.fromarray(np.round(image * 255.0).astype(np.uint8), mode="L")
            canvas.paste(tile, (label_width + k * (size + pad), top))
    return canvas
