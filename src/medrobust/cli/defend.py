"""`medrobust defend`: apply a preprocessing defense to a folder of images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from medrobust.cli.app import app, console, progress_bar, user_errors


def _output_paths(files: list[Path], root: Path, out: Path) -> dict[Path, Path]:
    """``out / relative path`` with a .png suffix; when two inputs would share a name (a.jpg and
    a.png), the later keeps its suffix (a.jpg.png)."""
    mapping: dict[Path, Path] = {}
    taken: set[Path] = set()
    for f in files:
        rel = f.relative_to(root)
        target = out / rel.with_suffix(".png")
        if target in taken:
            target = out / rel.with_name(rel.name + ".png")
        taken.add(target)
        mapping[f] = target
    return mapping


@app.command("defend")
@user_errors
def defend(
    input_dir: Annotated[Path, typer.Option("--input", help="Folder of images (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the defended 8-bit PNGs into (same relative paths).")],
    defense: Annotated[str, typer.Option(
        "--defense", help="Defense spec, e.g. jpeg+tv, jpeg:quality=50+tv:weight=0.1, tvm, bits:bits=5.")] = "jpeg+tv",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images of equal size defended together.")] = 32,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")] = "auto",
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed for randomized defenses (tvm).")] = None,
) -> None:
    """Apply a defense to every image under --input and write 8-bit grayscale PNGs under --out.

    Unreadable files are skipped and listed; the exit status is then 3 (partial).
    """
    import numpy as np
    import torch

    from medrobust.data.errors import ImageReadError
    from medrobust.data.io import IMAGE_SUFFIXES, is_image_file, read_image, write_png
    from medrobust.defenses.registry import build_defense
    from medrobust.models.device import resolve_device

    built = build_defense(defense)
    if seed is not None:
        built.manual_seed(seed)
    torch_device = resolve_device(device)
    root, out_root = input_dir.resolve(), out.resolve()
    if not root.is_dir():
        raise ValueError(f"{input_dir}: not a folder; point --input at a folder of images")
    if out_root == root:
        raise ValueError(f"--out {out} is the input folder; choose another folder so the originals are kept")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and is_image_file(p) and not p.is_relative_to(out_root))
    if not files:
        raise ValueError(f"{input_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}) found; check the folder")
    targets = _output_paths(files, root, out_root)
    skipped: list[tuple[Path, str]] = []
    pending: dict[tuple[int, int], list[tuple[Path, np.ndarray]]] = {}
    written = 0

    def flush(key: tuple[int, int]) -> int:
        batch = pending.pop(key, [])
        if not batch:
            return 0
        x = torch.from_numpy(np.stack([a for _, a in batch]))[:, None].to(torch_device)
        with torch.no_grad():
            y = built(x).cpu()
        for (path, _), image in zip(batch, y):
            write_png(targets[path], image[0])
        return len(batch)

    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"defend ({built.name})", total=len(files))
        for path in files:
            try:
                array = read_image(path)
            except ImageReadError as err:
                skipped.append((path, err.problem))
                bar.advance(task)
                continue
            key = (int(array.shape[0]), int(array.shape[1]))
            pending.setdefault(key, []).append((path, array))
            if len(pending[key]) >= batch_size:
                n = flush(key)
                written += n
                bar.advance(task, n)
        for key in list(pending):
            n = flush(key)
            written += n
            bar.advance(task, n)
    elapsed = max(time.perf_counter() - start, 1e-9)
    console.print(f"defended {written} images with {built.spec()} on {torch_device} "
                  f"({written / elapsed:.1f} images/s) into {out}", highlight=False)
    if skipped:
        console.print(f"skipped {len(skipped)} unreadable file(s):", highlight=False)
        for path, reason in skipped:
            console.print(f"  {path}: {reason}", markup=False, highlight=False)
        raise typer.Exit(code=3)
