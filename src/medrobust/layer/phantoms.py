"""``mr.write_phantoms`` and ``mr.phantom_gallery``: the embedded synthetic chest radiographs
(Normal / Pneumonia / Pneumothorax) as a folder of PNGs, or as one picture of examples."""

from __future__ import annotations

from pathlib import Path

from medrobust.execution.progress import Progress, SilentProgress


def write_phantoms(out: str | Path, per_class: int = 100, size: int = 128, seed: int = 0,
                   progress: Progress | None = None) -> Path:
    """Write ``out/<Class>/*.png`` (8-bit grey) and ``out/manifest.csv`` (label, split, the
    generator's parameters); the same seed gives byte-identical images.

    Args:
        out: the folder to write (a class-per-folder tree :func:`mr.open_images` reads).
        per_class: phantoms per class (Normal, Pneumonia, Pneumothorax). Default 100.
        size: the side of each image in pixels. Default 128.
        seed: the generator's seed. Default 0.
        progress: reports the stage ``phantoms``. Default None: silent.

    Returns:
        The path of ``manifest.csv``.
    """
    from medrobust.data.phantom.export import write_phantom_dataset

    with (progress or SilentProgress()).stage("phantoms", 3 * per_class) as bar:
        done = [0]

        def advance(n: int) -> None:
            bar.advance(n - done[0])
            done[0] = n

        return write_phantom_dataset(Path(out), per_class, size, seed, progress=advance)


def phantom_gallery(per_class: int = 6, size: int = 192, seed: int = 0):
    """One picture of example phantoms, a row per class, each row labelled on the left.

    Args:
        per_class: phantoms per row. Default 6.
        size: the side of each phantom in pixels. Default 192.
        seed: the generator's seed. Default 0.

    Returns:
        A grey PIL image.
    """
    from medrobust.data.phantom.export import phantom_gallery as gallery

    return gallery(per_class, size, seed)
