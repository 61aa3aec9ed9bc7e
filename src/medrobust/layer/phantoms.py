"""``mr.write_phantoms`` and ``mr.phantom_gallery``: the embedded synthetic chest radiographs
(Normal / Pneumonia / Pneumothorax) as a folder of PNGs, or as one picture of examples."""

from __future__ import annotations

from pathlib import Path

from medrobust.execution.progress import Progress, SilentProgress


def write_phantoms(out: str | Path, per_class: int = 100, size: int = 128, seed: int = 0,
                   progress: Progress | None = None) -> Path:
    """Write ``out/<Class>/*.png`` (8-bit grey) and ``out/manifest.csv`` (label, split);
    the same seed gives byte-identical images. Returns the manifest's path."""
    from medrobust.data.phantom.export import write_phantom_dataset

    with (progress or SilentProgress()).stage("phantoms", 3 * per_class) as bar:
        done = [0]

        def advance(n: int) -> None:
            bar.advance(n - done[0])
            done[0] = n

        return write_phantom_dataset(Path(out), per_class, size, seed, progress=advance)


def phantom_gallery(per_class: int = 6, size: int = 192, seed: int = 0):
    """A PIL image: one row of example phantoms per class."""
    from medrobust.data.phantom.export import phantom_gallery as gallery

    return gallery(per_class, size, seed)
