"""Guard.predict's hooks for a server: ``screen`` (a stateful check such as the query-attack watch)
flags images as a detector would, with on_flag deciding, and ``timings`` receives each step's seconds."""

from __future__ import annotations

import torch

import medrobust as mr
from medrobust.models import build_classifier

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


def _guard(on_flag: str):
    model = build_classifier("small-cnn", CLASSES, 32).eval()
    return mr.guard(model, defense="jpeg:quality=75", detectors=None, on_flag=on_flag)


def test_a_screened_image_abstains_without_labels_and_the_others_are_untouched():
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    seen = []

    def screen(batch, ids):
        seen.append((tuple(batch.shape), list(ids)))
        return ["" if i != "1" else "query-attack watch: test" for i in ids]

    timings: dict[str, float] = {}
    result = _guard("abstain").predict(x, screen=screen, timings=timings)
    assert seen == [((3, 1, 32, 32), ["0", "1", "2"])]  # once per batch, as read
    assert [a.decision for a in result] == ["accept", "abstain", "accept"]
    flagged = result[1]
    assert flagged.flagged and flagged.reason == "query-attack watch: test"
    assert flagged.label is None and flagged.probabilities is None and flagged.undefended_label is None
    assert set(timings) == {"read", "detectors", "defense", "model", "total"}
    assert all(v >= 0 for v in timings.values()) and timings["total"] >= timings["model"] > 0


def test_warn_keeps_the_label_and_a_failed_image_keeps_its_own_reason_first():
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    x[1, 0, 0, 0] = float("nan")
    result = _guard("warn").predict(x, screen=lambda batch, ids: ["query-attack watch: w"] * len(ids))
    warned, failed = result[0], result[1]
    assert warned.decision == "warn" and warned.label in CLASSES and warned.reason == "query-attack watch: w"
    assert failed.decision == "abstain" and failed.label is None
    assert failed.reason.startswith("the image holds a non-finite value") or "non-finite" in failed.reason
