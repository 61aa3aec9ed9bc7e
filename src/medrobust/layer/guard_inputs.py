"""The images a guard is asked about, read with the same readers and contract as ``mr.predict``,
and the abstentions owed to the ones that cannot be read.

A guard answers every image it is given (DESIGN.md, "Guarded inference"): an unreadable file
(listed in the images' ``skipped``) and an array or tensor image holding a non-finite value or
a value outside [0, 1] get an abstention with the reason here, and the other images go on to
the model. One bad image never hides the others' answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medrobust.data.record_ids import printable_path
from medrobust.layer.guard_answers import GuardAnswer, failed_answer
from medrobust.layer.images import Images, open_images


@dataclass
class GuardInputs:
    """Images to run through the guard and the abstentions already decided.

    Args:
        images: the readable candidates (None when none is left).
        order: every image's id, in the order given.
        early: abstentions decided before any model ran (bad array images). Default: empty.
    """

    images: Images | None
    order: list[str]
    early: dict[str, GuardAnswer] = field(default_factory=dict)

    def unread(self, answered: set[str]) -> list[GuardAnswer]:
        """Abstentions for the files that were given but never answered (unreadable).

        Args:
            answered: the ids the guard answered.

        Returns:
            One abstention per unreadable file, with the reader's reason; the ids of files that
            were not even records (a missing file given by name) are appended to :attr:`order`.
        """
        if self.images is None or self.images.dataset is None:
            return []
        dataset = self.images.dataset
        skipped = [*getattr(getattr(dataset, "parent", None), "skipped", []), *dataset.skipped]
        reasons = {str(s.path): str(s.reason) for s in skipped}
        out = []
        known = set()
        for record in dataset.records:
            path = printable_path(record.path) if record.path is not None else record.id
            known.add(path)
            if record.id in answered or record.id in self.early:
                continue
            why = reasons.get(path, "it could not be read")
            out.append(failed_answer(record.id, f"unreadable image: {path}: {why}"))
        for path, why in reasons.items():
            if path not in known:
                self.order.append(path)
                out.append(failed_answer(path, f"unreadable image: {path}: {why}"))
        return out


def guard_inputs(source: Any, size: int | None) -> GuardInputs:
    """Open ``source`` for a guard: files, folders, DICOM, a data source, :class:`Images`,
    numpy arrays or tensors (N, C, H, W) in [0, 1].

    Args:
        source: the images (see :func:`mr.open_images`); paths are read as plain images (class
            folders ignored), resized to ``size``; of ``(images, labels)`` the labels are ignored.
        size: the side files are resized to (the model's square input size), or None.

    Returns:
        The :class:`GuardInputs`: array images that hold a non-finite value or one outside
        [0, 1] are answered already (abstain), the others are left to the guard.

    Raises:
        ValueError: a source the readers refuse as a whole (no such folder, not a batch).
    """
    if isinstance(source, tuple) and source and isinstance(source[0], (np.ndarray, torch.Tensor)):
        source = source[0]  # (images, labels): a guard does not need the labels
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(source)
    if isinstance(source, torch.Tensor):
        return _tensor_inputs(source)
    if isinstance(source, (str, list)) or hasattr(source, "__fspath__"):
        images = open_images(source, size=size, labelled=False)
    else:
        images = open_images(source)
    return GuardInputs(images, list(images.ids))


def _tensor_inputs(x: torch.Tensor) -> GuardInputs:
    """Images held in memory, each checked on its own: one bad image is answered, not refused
    with the batch."""
    from medrobust.data.image_batch import RANGE_TOLERANCE, check_image_batch

    check_image_batch(x, "the guard")
    x = x.detach().float().cpu()
    ids = [str(i) for i in range(len(x))]
    flat = x.reshape(len(x), -1)
    finite = torch.isfinite(flat).all(1)
    inside = (flat.amin(1) >= -RANGE_TOLERANCE) & (flat.amax(1) <= 1 + RANGE_TOLERANCE) if len(x) else finite
    early: dict[str, GuardAnswer] = {}
    for i in torch.nonzero(~finite).flatten().tolist():
        early[ids[i]] = failed_answer(ids[i], "the image holds a non-finite value (NaN or infinite); "
                                              "it was not shown to the model")
    for i in torch.nonzero(finite & ~inside).flatten().tolist():
        early[ids[i]] = failed_answer(ids[i], f"the image's values lie in [{float(flat[i].min()):.4g}, "
                                              f"{float(flat[i].max()):.4g}], outside [0, 1] (scale 8-bit "
                                              "images by 1/255); it was not shown to the model")
    keep = [i for i in range(len(x)) if ids[i] not in early]
    images = (open_images(x[keep].clamp(0.0, 1.0), ids=[ids[i] for i in keep]) if keep else None)
    return GuardInputs(images, ids, early)
