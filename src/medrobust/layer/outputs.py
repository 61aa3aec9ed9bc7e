"""Where the commands that write images put each one: at the image's id (its path relative to
the source folder) under the output folder, as a PNG, so ``attack -> defend -> detect
--reference ORIGINALS`` chain on the same relative paths. Writes are atomic, and never leave
the output folder whatever an id holds."""

from __future__ import annotations

from pathlib import Path, PurePosixPath


class OutputNames:
    """``out / id`` with a ``.png`` suffix, one distinct file per id: when two ids would share a
    file (``a.jpg`` and ``a.png``), the later keeps its suffix (``a.jpg.png``)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._taken: set[PurePosixPath] = set()

    def relative(self, item_id: str) -> PurePosixPath:
        parts = [p for p in PurePosixPath(item_id.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
        rel = PurePosixPath(*parts) if parts else PurePosixPath("image")
        target = rel.with_suffix(".png")
        if target in self._taken:
            target = rel.with_name(rel.name + ".png")
        n = 1
        while target in self._taken:  # a third name for the same stem: number it
            target = rel.with_name(f"{rel.stem}-{n}.png")
            n += 1
        self._taken.add(target)
        return target

    def path(self, item_id: str) -> Path:
        return self.out / self.relative(item_id)


def write_images(names: OutputNames, ids: list[str], images) -> list[str]:
    """Each image (C, H, W) in [0, 1] as an 8-bit grey PNG at its id; the relative paths written."""
    from medrobust.data.io import write_png

    written = []
    for item_id, image in zip(ids, images):
        rel = names.relative(item_id)
        write_png(names.out / rel, image[0] if image.ndim == 3 else image)
        written.append(rel.as_posix())
    return written
