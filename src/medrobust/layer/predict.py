"""``mr.predict``: a model's decisions and probabilities on images, with the model's own
decision rule (the threshold of a binary or multi-label model, never an argmax)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medrobust.data.image_size import read_side
from medrobust.data.record_ids import printable_path
from medrobust.execution.progress import Progress, SilentProgress
from medrobust.layer.images import open_images
from medrobust.layer.models import load_model
from medrobust.models.contract import ModelContract


@dataclass
class Predictions:
    """A model's decisions and probabilities on images, in the order of ``ids``.

    Args:
        classes: the model's class names, in output order.
        ids: one per image answered (images whose output was not finite are left out).
        labels: the decisions: (N,) class indices (multi-label: (N, K) 0/1).
        probabilities: (N, K) probabilities.
        multilabel: whether the model is multi-label (each finding decided apart).
        files: the file of each image, as printed (its id for images held in memory). Default:
            empty (then :meth:`records` names images by id).
        skipped: unreadable files and images whose output was not finite, one line each.
            Default: empty.
    """

    classes: list[str]
    ids: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    multilabel: bool
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per image: file, class (multi-label: the findings joined by ``|``)
        and confidence (multi-label: every probability)."""
        out: list[dict[str, Any]] = []
        for file, y, p in zip(self.files or self.ids, self.labels, self.probabilities):
            if not self.multilabel:
                out.append({"file": file, "class": self.classes[int(y)], "confidence": round(float(p[int(y)]), 4)})
            else:
                found = [c for c, flag in zip(self.classes, y.tolist()) if flag]
                out.append({"file": file, "class": "|".join(found) or "none",
                            "probabilities": {c: round(float(v), 4) for c, v in zip(self.classes, p)}})
        return out


def predict(model: Any, images: Any, *, contract: ModelContract | None = None, batch_size: int = 32,
            size: int | None = None, progress: Progress | None = None) -> Predictions:
    """Predictions of ``model`` on ``images``, with the model's own decision rule.

    Args:
        model: a path or module (see :func:`mr.load_model`).
        images: a path, files, a dataset or tensors (see :func:`mr.open_images`); paths are read
            as plain images (their class folders ignored).
        contract: the :class:`~medrobust.models.contract.ModelContract` of a model file that is
            not a medrobust checkpoint. Default None.
        batch_size: images per forward pass. Default 32.
        size: the side images are resized to. Default None: the model's input size when it is
            square (a volume model's in-plane side when square; its depth is kept), else each image's own.
        progress: reports the stage ``predict``. Default None: silent.

    Returns:
        The :class:`Predictions` (images whose output is not finite are listed in ``skipped``).

    Shape:
        - Tensors in: (N, C, H, W) float in [0, 1].
        - Out: ``labels`` (N,) ((N, K) multi-label), ``probabilities`` (N, K).

    >>> import torch, medrobust as mr
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 8, 3))
    >>> model = mr.load_model(net, classes=["Normal", "Pneumonia", "Pneumothorax"], network_channels=1)
    >>> p = mr.predict(model, torch.rand(5, 1, 8, 8))
    >>> p.labels.shape, p.probabilities.shape, bool(abs(p.probabilities.sum(1) - 1).max() < 1e-5)
    ((5,), (5, 3), True)
    """
    model = load_model(model, contract)
    fixed = read_side(model.input_size)
    images = open_images(images, size=size or fixed, labelled=False if not _is_labelled_source(images) else None)
    ids: list[str] = []
    paths = images.paths()
    labels: list[torch.Tensor] = []
    probabilities: list[torch.Tensor] = []
    skipped: list[str] = []
    with (progress or SilentProgress()).stage("predict", len(images)) as bar:
        for x, _, batch_ids in images.batches(batch_size):
            proba = model.predict_proba(x, batch_size)
            decided = model.predict(x, batch_size)
            finite = torch.isfinite(proba).reshape(len(proba), -1).all(1)
            for i in torch.nonzero(~finite).flatten().tolist():
                name = printable_path(paths[batch_ids[i]]) if batch_ids[i] in paths else batch_ids[i]
                skipped.append(f"{name}: the model's output for this image is not a finite number (NaN or "
                               "infinite); check the model with a known image")
            keep = finite.nonzero().flatten()
            ids += [batch_ids[i] for i in keep.tolist()]
            labels.append(decided[keep])
            probabilities.append(proba[keep])
            bar.advance(len(batch_ids))
    multilabel = str(getattr(model.output_kind, "value", model.output_kind)) == "multilabel"
    k = len(model.classes)
    return Predictions(
        classes=list(model.classes), ids=ids,
        labels=torch.cat(labels).numpy() if labels else np.zeros((0, k) if multilabel else (0,), dtype=np.int64),
        probabilities=torch.cat(probabilities).numpy() if probabilities else np.zeros((0, k), dtype=np.float32),
        multilabel=multilabel, files=[printable_path(paths[i]) if i in paths else i for i in ids],
        skipped=[*images.skipped, *skipped])


def _is_labelled_source(images: Any) -> bool:
    """Tensors, datasets and opened Images keep their labels; paths are read as plain images."""
    return not isinstance(images, (str, list)) and not hasattr(images, "__fspath__")
