"""The query-attack watch (medrobust.detection.query_watch): fingerprints, the near rule, the flag,
exact re-sends, per-client histories and their bounds, and the two measurements its defaults rest
on: a query search (the pattern of Square) is flagged within 31 queries, and the detector study's
benign changes replayed a few times on each of many images are never flagged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medrobust.detection.query_watch import QueryWatch, fingerprint


def test_fingerprint_is_the_grey_block_means():
    image = np.zeros((3, 32, 64), dtype=np.float32)
    image[:, :, :32] = 1.0  # left half white
    image[0, :16, 32:] = 0.9  # top right quarter 0.3 in the channels' mean
    fp = fingerprint(image).reshape(16, 16)
    assert np.allclose(fp[:, :8], 1.0)
    assert np.allclose(fp[:8, 8:], 0.3)
    assert np.allclose(fp[8:, 8:], 0.0)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), c=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
def test_fingerprint_shape_and_range(h, w, c, seed):
    image = np.random.default_rng(seed).random((c, h, w), dtype=np.float32)
    fp = fingerprint(image)
    assert fp.shape == (256,) and fp.dtype == np.float32
    assert image.min() - 1e-6 <= fp.min() and fp.max() <= image.max() + 1e-6
    assert np.array_equal(fingerprint(image), fp)  # deterministic


def test_non_finite_pixels_do_not_break_the_fingerprint():
    image = np.full((1, 32, 32), np.nan, dtype=np.float32)
    assert np.all(np.isfinite(fingerprint(image)))


def _nudged(base: np.ndarray, n: int, seed: int = 0, sigma: float = 0.01) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(base + rng.normal(0, sigma, base.shape), 0, 1).astype(np.float32) for _ in range(n)]


def test_a_query_search_is_flagged_at_the_documented_query():
    """Defaults: a query is near from the 21st on (20 near predecessors); the 11th near query in the
    window of 50 (more than 20%) flags the client: query 31."""
    watch = QueryWatch()
    base = np.random.default_rng(1).random((1, 32, 32)).astype(np.float32)
    verdicts = [watch.observe("mallory", q) for q in _nudged(base, 40)]
    assert [v.near for v in verdicts[:20]] == [False] * 20 and all(v.near for v in verdicts[20:])
    first = next(i for i, v in enumerate(verdicts) if v.flagged) + 1
    assert first == 31 == watch.neighbours + watch.flag_after
    assert verdicts[30].reason.startswith("query-attack watch: 11 of this client's last 31 queries")
    assert verdicts[29].reason == ""


def test_square_through_the_watch_is_flagged(phantom32):
    """medrobust's own Square attack (8/255) on a phantom, each query shown to the watch: flagged at
    query 31 or 32. The model answers one class with certainty, so the search never ends early."""
    from medrobust.attacks.square import SquareAttack
    from medrobust.models.output_kind import OutputKind

    x = phantom32[0]["test"][0][:1]
    watch = QueryWatch()
    seen: list[bool] = []

    class Certain(torch.nn.Module):
        classes, output_kind = ["Normal", "Pneumonia", "Pneumothorax"], OutputKind.SOFTMAX

        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            seen.extend(watch.observe("mallory", image.numpy()).flagged for image in batch)
            return torch.tensor([[20.0, 0.0, 0.0]]).repeat(len(batch), 1)

    SquareAttack(eps=8 / 255, queries=40)(Certain(), x, torch.tensor([0]))
    assert len(seen) == 40
    assert seen.index(True) + 1 in (31, 32)


def test_the_benign_replay_is_never_flagged(phantom32):
    """Every image of 40 sent 13 times in a row (as received, then JPEG 90, re-windowed, resized and
    with one grey level of noise, three draws each): no client flag, though each copy has up to 12
    near predecessors."""
    from medrobust.detection.benign import benign_changes

    x = phantom32[0]["test"][0][:40]
    watch = QueryWatch()
    changed = [benign_changes(x, generator=seed) for seed in range(3)]
    flagged = 0
    for i in range(len(x)):
        copies = [x[i]] + [c[name][i] for c in changed for name in c]
        for copy in copies:
            flagged += watch.observe("clinic", copy.numpy()).flagged
    assert flagged == 0
    assert watch._clients["clinic"].queries == 40 * 13


@pytest.fixture(scope="module")
def ct_heads():
    """40 distinct phantom heads, 8 x 32 x 32 volumes on the CT grid."""
    from medrobust.data.phantom.ct_dataset import CTPhantomDataset

    ds = CTPhantomDataset(per_class=14, size=32, depth=8, seed=3, fractions=None)
    return torch.stack([ds[i][0] for i in range(40)])


def test_ct_volumes_are_watched_on_their_grid(ct_heads):
    """CT thumbnails scaled by grid_scale (8.03: 0.03 is 15.3 HU): Square at 4 and at 16 HU is flagged
    at query 31 or 32, and the CT benign replay (re-calibration, reconstruction noise, slice shift,
    resampling; three draws each, 13 queries of each of 40 heads in a row) never is. Unscaled
    (0.03 = 123 HU), distinct heads lie within the radius of one another and the replay is flagged."""
    from medrobust.attacks.square import SquareAttack
    from medrobust.data.stored_grid import CT_HU
    from medrobust.detection.benign import benign_changes
    from medrobust.detection.query_watch import grid_scale
    from medrobust.models.output_kind import OutputKind

    scale = grid_scale(CT_HU)
    changed = [benign_changes(ct_heads, generator=seed, grid=CT_HU) for seed in range(3)]
    replays = {}
    for s in (1.0, scale):
        watch = QueryWatch()
        replays[s] = sum(watch.observe("clinic", copy.numpy(), s).flagged for i in range(len(ct_heads))
                         for copy in [ct_heads[i]] + [c[name][i] for c in changed for name in c])
        assert watch._clients["clinic"].queries == 40 * 13
    assert replays[scale] == 0 and replays[1.0] > 100
    for eps_hu in (4, 16):
        watch, seen = QueryWatch(), []

        class Certain(torch.nn.Module):
            classes, output_kind = ["normal", "haemorrhage", "infarct"], OutputKind.SOFTMAX

            def forward(self, batch: torch.Tensor) -> torch.Tensor:
                seen.extend(watch.observe("mallory", v.numpy(), scale).flagged for v in batch)
                return torch.tensor([[20.0, 0.0, 0.0]]).repeat(len(batch), 1)

        SquareAttack(eps=CT_HU.eps_from_units(eps_hu), queries=40, quantize_bits=12)(Certain(), ct_heads[:1],
                                                                                     torch.tensor([0]))
        assert len(seen) == 40 and seen.index(True) + 1 in (31, 32), eps_hu


def test_exact_resends_are_compared_on_a_12_bit_grid():
    """A volume 1 HU away is a new query, not a re-send (on the 8-bit grid, 15 HU apart hashed alike)."""
    from medrobust.detection.query_watch import image_digest

    base = np.full((1, 4, 8, 8), 1064 / 4095, dtype=np.float32)  # 40 HU
    assert image_digest(base) == image_digest(base.copy())
    assert image_digest(base) != image_digest(base + 1 / 4095)
    eight = np.random.default_rng(4).integers(0, 256, (1, 16, 16)) / 255.0
    assert image_digest(eight) != image_digest(np.clip(eight + 1 / 255, 0, 1))


def test_exact_resends_are_not_counted():
    watch = QueryWatch(neighbours=2, window=5, max_near_rate=0.2)
    image = np.random.default_rng(2).random((1, 32, 32)).astype(np.float32)
    verdicts = [watch.observe("retrying", image.copy()) for _ in range(50)]
    assert not verdicts[0].repeat and all(v.repeat for v in verdicts[1:])
    assert not any(v.flagged or v.near for v in verdicts)


def test_clients_have_their_own_history_and_the_oldest_are_forgotten():
    watch = QueryWatch(neighbours=2, window=4, max_near_rate=0.2, max_clients=2, history=3)
    base = np.random.default_rng(3).random((1, 16, 16)).astype(np.float32)
    queries = _nudged(base, 6)
    for q in queries:
        watch.observe("a", q)
    assert watch.flagged("a") and not watch.flagged("b")
    assert len(watch._clients["a"].fingerprints) == 3  # history bounded
    watch.observe("b", base)
    watch.observe("c", base)  # a third client: the least recently seen ("a") is forgotten
    assert set(watch._clients) == {"b", "c"} and not watch.flagged("a")


def test_the_flag_holds_until_a_whole_window_is_clean():
    watch = QueryWatch(neighbours=2, window=4, max_near_rate=0.2)
    rng = np.random.default_rng(4)
    base = rng.random((1, 32, 32)).astype(np.float32)
    for q in _nudged(base, 5):
        watch.observe("a", q)
    assert watch.flagged("a")
    distinct = [rng.random((1, 32, 32)).astype(np.float32) for _ in range(4)]
    states = [watch.observe("a", d).flagged for d in distinct]
    assert states == [True, True, True, False]  # the fourth clean query empties the window of near ones


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"radius": 0}, "radius must be positive"),
    ({"neighbours": 0}, "neighbours must be a whole number"),
    ({"max_near_rate": 1.0}, "max_near_rate must be a fraction"),
    ({"neighbours": 30, "history": 10}, "cannot exceed the history"),
])
def test_bad_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        QueryWatch(**kwargs)
