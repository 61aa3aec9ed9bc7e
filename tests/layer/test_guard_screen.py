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

    def screen(batch, ids, grid):
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
    result = _guard("warn").predict(x, screen=lambda batch, ids, grid: ["query-attack watch: w"] * len(ids))
    warned, failed = result[0], result[1]
    assert warned.decision == "warn" and warned.label in CLASSES and warned.reason == "query-attack watch: w"
    assert failed.decision == "abstain" and failed.label is None
    assert failed.reason.startswith("the image holds a non-finite value") or "non-finite" in failed.reason


def test_a_screen_that_raises_makes_its_batch_abstain_not_the_call_fail():
    """Fail closed: the query watch once raised on volumes, and the server answered 500."""
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))

    def broken(batch, ids, grid):
        raise ValueError("cannot fingerprint this (injected)")

    result = _guard("warn").predict(x, screen=broken)
    for answer in result:  # even on_flag=warn: a check that could not run gives no label
        assert answer.decision == "abstain" and answer.label is None and answer.undefended_label is None
        assert answer.reason == "the query screen failed on this image (ValueError: cannot fingerprint this (injected))"


def test_the_watch_screens_ct_series_on_their_grid(tmp_path):
    """A CT volume model's guard with the watch in front, given DICOM series as files: answered (the
    watch's fingerprint once refused volumes), the screen told the CT grid, each series one query."""
    from medrobust.data.phantom.ct_export import write_ct_phantom_dataset
    from medrobust.data.stored_grid import CT_HU
    from medrobust.layer.guard_watch import watch_screen

    torch.manual_seed(0)
    model = build_classifier("small-cnn-3d", ["normal", "haemorrhage", "infarct"], (4, 16, 16),
                             intensity="hu_windows:40,80").eval()
    write_ct_phantom_dataset(tmp_path / "ct", per_class=1, size=16, depth=4)
    series = sorted(p for p in (tmp_path / "ct").glob("*/*") if p.is_dir())
    assert len(series) == 3
    watch = mr.QueryWatch()
    screen = watch_screen(watch, "radiology")
    grids = []

    def recording(batch, ids, grid):
        grids.append(grid)
        return screen(batch, ids, grid)

    passes = []
    model.register_forward_hook(lambda module, args, out: passes.append(len(args[0])))
    g = mr.guard(model, defense="median:size=2", detectors=None)
    result = g.predict([str(s) for s in series], screen=recording)
    assert [a.decision for a in result] == ["accept"] * 3, [a.reason for a in result]
    assert passes == [3 * 2]  # the three volumes and their defended copies in one pass (no retry image by image)
    assert grids and all(grid is CT_HU for grid in grids)
    assert watch._clients["radiology"].queries == 3
    # a series' slices sent one by one to a volume model: each abstains saying how to send a volume
    from medrobust.layer.guard import VOLUME_MODEL_GOT_IMAGE

    slices = g.predict([str(f) for f in sorted(series[0].iterdir())[:2]])
    assert [a.decision for a in slices] == ["abstain"] * 2 and all(a.reason == VOLUME_MODEL_GOT_IMAGE for a in slices)
