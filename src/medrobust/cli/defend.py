"""`medrobust defend`: apply a preprocessing defense to a folder of images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medrobust.cli.app import app, console, print_skipped, user_errors
from medrobust.cli.progress import CliProgress


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
    """Apply a defense to every image under --input and write 8-bit grayscale PNGs under --out, at the
    same relative paths (so attacked, defended and original folders pair up).

    Unreadable files are skipped and listed; the exit status is then 3 (partial).
    """
    import medrobust as mr

    if not input_dir.is_dir():
        raise ValueError(f"{input_dir}: not a folder; point --input at a folder of images")
    with CliProgress() as progress:
        result = mr.defend(input_dir, defense, out=out, seed=seed, device=device, batch_size=batch_size,
                           progress=progress)
    console.print(f"defended {len(result.ids)} images with {result.defense} on {result.device} "
                  f"({result.images_per_second:.1f} images/s) into {out}", highlight=False)
    if result.skipped:
        print_skipped(result.skipped)
        raise typer.Exit(code=3)
