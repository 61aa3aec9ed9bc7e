"""A served guard (``medrobust guard serve``) seen from outside, as an attacker sees it: a black-box
classifier whose every forward pass is one ``POST /v1/predict``.

:class:`RemoteGuard` lets medrobust's query attacks (Square) run against the deployed server through
HTTP, the way the query-attack watch must meet them: each query batch is sent as 8-bit PNG files
(what a client can deliver) and the probabilities the server answers are read back as logits
(``log p`` for a softmax model; ``log(p / (1 - p))`` per class for a binary or multi-label one).
An abstention carries no probabilities: the attacker then learns nothing (equal logits). Every
answer is kept (:attr:`RemoteGuard.answers`), and :attr:`RemoteGuard.flagged_at` is the query at
which the server first answered with the query-attack watch's reason.

>>> remote = RemoteGuard("http://127.0.0.1:8100", token="mrb_...")  # doctest: +SKIP
>>> x_adv = SquareAttack(eps=8 / 255, queries=200)(remote, x, y)     # doctest: +SKIP
>>> remote.flagged_at                                                # doctest: +SKIP
31
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch
from torch import nn

WATCH_REASON = "query-attack watch:"
"""How the server's answers start the watch's reason."""


class QueryWatchFlagged(RuntimeError):
    """The server flagged this client (raised by :class:`RemoteGuard` with ``stop_when_flagged``)."""


def png_bytes(image: torch.Tensor) -> bytes:
    """One (C, H, W) image in [0, 1] as an 8-bit PNG (grey for C = 1, RGB for C = 3)."""
    from PIL import Image

    pixels = np.clip(np.rint(image.detach().float().cpu().numpy() * 255.0), 0, 255).astype(np.uint8)
    mode_image = Image.fromarray(pixels[0], "L") if pixels.shape[0] == 1 else Image.fromarray(pixels.transpose(1, 2, 0))
    out = io.BytesIO()
    mode_image.save(out, format="PNG")
    return out.getvalue()


class RemoteGuard(nn.Module):
    """The guard server at ``url`` as a black-box classifier (module docstring).

    Args:
        url: the server's base URL (``http://127.0.0.1:8100``).
        token: a bearer token, or None for a ``--no-auth`` server. Default None.
        stop_when_flagged: raise :class:`QueryWatchFlagged` at the first answer the query watch
            withheld (an attack run then ends there). Default False.
        timeout_s: seconds per request. Default 60.

    Shape:
        - x: (B, C, H, W) float in [0, 1].
        - Output: (B, K) logits ((B, 1) binary).
    """

    differentiable = False

    def __init__(self, url: str, token: str | None = None, stop_when_flagged: bool = False,
                 timeout_s: float = 60.0) -> None:
        import httpx

        super().__init__()
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(timeout=timeout_s)
        self.stop_when_flagged = stop_when_flagged
        described = self._checked(self.client.get(self.url + "/v1/guard", headers=self.headers))
        self.classes: list[str] = list(described["classes"])
        self.output_kind: str = described.get("output_kind", "softmax")
        self.answers: list[dict[str, Any]] = []
        self.flagged_at: int | None = None

    @staticmethod
    def _checked(response: Any) -> dict[str, Any]:
        if response.status_code != 200:
            raise RuntimeError(f"{response.request.url}: the guard server answered {response.status_code}: "
                               f"{response.text[:300]}")
        return response.json()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        files = [("images", (f"query-{len(self.answers) + i + 1}.png", png_bytes(image), "image/png"))
                 for i, image in enumerate(x)]
        body = self._checked(self.client.post(self.url + "/v1/predict", headers=self.headers, files=files))
        rows = []
        for answer in body["answers"]:
            self.answers.append(answer)
            if self.flagged_at is None and WATCH_REASON in (answer.get("reason") or ""):
                self.flagged_at = len(self.answers)
                if self.stop_when_flagged:
                    raise QueryWatchFlagged(f"the guard's query watch flagged this client at query {self.flagged_at}")
            rows.append(self._logits(answer.get("probabilities")))
        return torch.tensor(rows, dtype=torch.float32, device=x.device)

    def _logits(self, probabilities: dict[str, float | None] | None) -> list[float]:
        width = 1 if self.output_kind == "binary" else len(self.classes)
        if not probabilities:
            return [0.0] * width
        p = [min(max(float(probabilities.get(c) or 0.0), 1e-12), 1 - 1e-12) for c in self.classes]
        if self.output_kind == "softmax":
            return [math.log(v) for v in p]
        logit = [math.log(v / (1 - v)) for v in p]
        return logit[-1:] if width == 1 else logit

    def close(self) -> None:
        """Close the HTTP connection."""
        self.client.close()
