"""The query-attack watch in front of a guard: :class:`QueryWatch` (from
:mod:`medrobust.detection.query_watch`, where the method, its defaults and what it does not catch
are stated) and :func:`watch_screen`, which turns it into the ``screen`` that
:meth:`Guard.predict <medrobust.layer.guard.Guard.predict>` runs on each batch.

>>> import torch, medrobust as mr
>>> from medrobust.models import build_classifier
>>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32).eval()
>>> g = mr.guard(model, defense=None, detectors=None)
>>> watch = mr.QueryWatch(neighbours=2, window=4, max_near_rate=0.25)
>>> x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
>>> steps = [(x + 0.004 * i).clamp(0, 1) for i in range(5)]  # one image nudged: near from the 3rd query on
>>> [g.predict(s, screen=watch_screen(watch, "mallory"))[0].decision for s in steps]
['accept', 'accept', 'accept', 'abstain', 'abstain']
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from medrobust.data.stored_grid import StoredGrid
from medrobust.detection.query_watch import QueryWatch, WatchVerdict, grid_scale

__all__ = ["QueryWatch", "WatchVerdict", "watch_screen"]


def watch_screen(watch: QueryWatch, client: str,
                 on_verdict: Callable[[WatchVerdict], None] | None = None) -> Callable[[torch.Tensor, list[str]], list[str]]:
    """The ``screen`` for :meth:`Guard.predict <medrobust.layer.guard.Guard.predict>` that shows
    each image to ``watch`` as a query of ``client``.

    Args:
        watch: the :class:`QueryWatch` (one per server: it holds every client's history).
        client: the client's key (a tenant's name, or an address).
        on_verdict: called with each image's :class:`WatchVerdict` (a server counts flags with it).
            Default None.

    Returns:
        ``screen(x, ids, grid) -> reasons``: ``x`` (B, C, H, W) or volumes (B, C, D, H, W) in [0, 1]
        as the guard read them, on the stored ``grid`` (its thumbnails scaled by
        :func:`~medrobust.detection.query_watch.grid_scale`); one reason per image, ``""`` when
        the client is not flagged.
    """
    def screen(x: torch.Tensor, ids: list[str], grid: StoredGrid | None = None) -> list[str]:
        images = x.detach().float().cpu().numpy()
        scale = grid_scale(grid)
        reasons = []
        for image in images:
            verdict = watch.observe(client, image, scale)
            if on_verdict is not None:
                on_verdict(verdict)
            reasons.append(verdict.reason)
        return reasons

    return screen
