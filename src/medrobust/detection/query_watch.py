"""The query-attack watch: flag a client whose queries look like a black-box attack's search.

A query-based attack (Square, boundary, HopSkipJump, a transfer attack refined by queries) asks
the model about hundreds of near-identical copies of one image, each a small step from the
last; a clinical client sends each study once, and at most a handful of re-exported versions
of it. Stateful detection (Chen, Carlini & Wagner 2020, "Stateful detection of black-box
adversarial attacks"; Li et al. 2022, "Blacklight") keeps each client's recent queries and
looks for that pattern. This watch does so in numpy, with no model:

* **Fingerprint.** Each image becomes a 16 x 16 grey thumbnail (the channels' mean, then the
  mean over each of 16 x 16 blocks of pixels), a float32 vector of 256 values in [0, 1], 1 kB.
  Why not Chen et al.'s learned similarity encoder: it needs a network trained per modality,
  and the guard must watch any model's images; why not Blacklight's hashes of quantised pixel
  windows: they are built to match exact re-uses of pixel windows, which an attacker breaks by
  adding noise of one grey level everywhere, while a block mean of 200 pixels averages such
  noise away. A Square attack's candidates differ from one another by at most ``eps`` per pixel,
  so their thumbnails differ by at most ``eps`` too, wherever the perturbation is.
* **Distance.** The root mean square difference of two thumbnails, in grey units of [0, 1]
  (``||a - b||_2 / 16``). Two queries are *near* when it is at most ``radius`` (default 0.03,
  about 8 grey levels: every query of a Square attack at 8/255 is within it of the others, while
  distinct radiographs' thumbnails differ by several times more).
* **Near query.** A query is counted *near* when at least ``neighbours`` earlier queries of the
  same client (default 20) lie within ``radius`` of it: Chen et al.'s k-nearest-neighbour rule
  in the form of a count. One earlier near query is not enough, and this is the measured reason
  (tests/detection/test_query_watch.py): the detector study's benign changes (JPEG re-encoding,
  re-windowing, a resize round trip, sensor noise), applied three times each to one image, make
  13 near-identical queries that each have up to 12 near predecessors, so a rule of "any near
  predecessor" flags an honest client that re-exports a study; an attack's queries each have
  every earlier query of its search as a neighbour, hundreds of them.
* **Flag.** A client is flagged when more than ``max_near_rate`` (default 0.2) of its last
  ``window`` queries (default 50) were near, i.e. more than 10 of 50: once an attack has sent
  ``neighbours`` queries, each further one is near, so Square is flagged within
  ``neighbours + max_near_rate * window + 2`` queries (32 with the defaults; measured by
  ``benchmarks/bench_guard.py`` through HTTP). The flag stays until a whole window of the
  client's queries holds no near query (an attacker cannot slip below the rate by mixing in a
  few distinct images).
* **CT and volumes.** A volume's thumbnail is that of its mean over the slices. CT is stored on
  4,095 HU where a radiograph has 255 grey levels, and its attacks are measured up to 16 HU where a
  radiograph's go up to 8 grey levels; the guard scales CT thumbnails by (8/255) / (16/4095) = 8.03
  (:func:`grid_scale`), so the radius of 0.03 is 15.3 HU there. Unscaled, 123 HU: 12% of pairs of
  distinct phantom heads lay within it, and the CT benign replay flagged 386 of 520 queries.
* **Exact re-sends** (the same pixels again, found by a hash of the image on a 12-bit grid: a client
  retrying a request) are not added to the history and never count as near: for a deterministic
  guard a re-send tells the attacker nothing new. Limitation: against a *randomised* defense
  (``tvm``) repeated queries of one image could average its randomness (EOT); they are then
  still not counted.

What it does not catch: an attack spread over many clients (tokens or addresses: the history is
per client), one that waits out the history (``history`` queries, default 2000, per client), a
transfer attack crafted on a surrogate and sent once (no search), and an attack whose steps are
larger than ``radius`` in the thumbnail (a large-budget attack, or one that moves the image
around). A server with several worker processes keeps one history per process.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from medrobust.data.stored_grid import EIGHT_BIT, StoredGrid

FINGERPRINT_SIDE = 16
"""The thumbnail's side: 256 values per image."""


def fingerprint(image: np.ndarray, side: int = FINGERPRINT_SIDE) -> np.ndarray:
    """The image's grey thumbnail: the channels' mean (a volume's: over its slices too), then the
    mean over each of ``side`` x ``side`` blocks (an image smaller than ``side`` is sampled at the
    nearest pixel).

    Args:
        image: (C, H, W) or (H, W) values in [0, 1], or a volume (C, D, H, W) (non-finite values
            count as 0).
        side: the thumbnail's side. Default 16.

    Returns:
        (side * side,) float32.

    >>> fingerprint(np.ones((1, 32, 32))).shape, float(fingerprint(np.full((3, 40, 24), 0.5)).max())
    ((256,), 0.5)
    >>> float(fingerprint(np.stack([np.zeros((1, 32, 32)), np.ones((1, 32, 32))], axis=1)).max())  # 2 slices
    0.5
    """
    x = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if x.ndim == 4:
        x = x.mean(axis=(0, 1))
    elif x.ndim == 3:
        x = x.mean(axis=0)
    if x.ndim != 2 or min(x.shape) < 1:
        raise ValueError("a fingerprint needs an image of shape (C, H, W) or (H, W), or a volume (C, D, H, W), "
                         f"got {np.shape(image)}")
    for axis in (0, 1):
        n = x.shape[axis]
        if n >= side:
            starts = (np.arange(side) * n) // side
            sums = np.add.reduceat(x, starts, axis=axis)
            counts = np.diff(np.append(starts, n)).astype(np.float32)
            x = sums / (counts[:, None] if axis == 0 else counts[None, :])
        else:
            x = np.take(x, (np.arange(side) * n) // side, axis=axis)
    return x.reshape(-1).astype(np.float32)


DIGEST_LEVELS = 4095
"""The grid an exact re-send is compared on: 12 bits, CT's integer HU (an 8-bit image's 255 levels
fall on distinct points of it; on the 8-bit grid, CT volumes 15 HU apart hashed alike, so a search
in steps of a few HU would have passed as re-sends)."""


def image_digest(image: np.ndarray) -> bytes:
    """A hash of the image on a 12-bit grid (:data:`DIGEST_LEVELS`, shape included): equal for an
    exact re-send."""
    x = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0)
    grid = np.clip(np.rint(x * float(DIGEST_LEVELS)), 0, DIGEST_LEVELS).astype(np.uint16)
    return hashlib.blake2b(grid.tobytes() + repr(grid.shape).encode(), digest_size=16).digest()


def grid_scale(grid: StoredGrid | None) -> float:
    """The factor :meth:`QueryWatch.observe` scales a thumbnail by for images on ``grid``: the 8-bit
    grid's score budget over ``grid``'s (1 for radiographs; (8/255) / (16/4095) = 8.03 for CT, whose
    attacks are measured up to 16 HU where radiographs' go up to 8 grey levels).

    Args:
        grid: a :class:`~medrobust.data.stored_grid.StoredGrid`, or None (1).

    >>> from medrobust.data.stored_grid import CT_HU, EIGHT_BIT
    >>> grid_scale(EIGHT_BIT), round(grid_scale(CT_HU), 2), round(0.03 / grid_scale(CT_HU) * 4095, 1)
    (1.0, 8.03, 15.3)
    """
    if grid is None:
        return 1.0
    return EIGHT_BIT.score_budget / float(grid.score_budget)


@dataclass(frozen=True)
class WatchVerdict:
    """What the watch concluded on one query.

    Args:
        neighbours: earlier queries of the client within the radius (capped at the threshold).
        near: whether the query counted as near (at least ``neighbours`` of them).
        repeat: an exact re-send of an image the client sent before (not counted).
        flagged: whether the client is flagged after this query.
        near_in_window: near queries among the client's last ``window``.
        reason: ``"query-attack watch: ..."`` when flagged, else ``""``.
    """

    neighbours: int
    near: bool
    repeat: bool
    flagged: bool
    near_in_window: int
    reason: str = ""


@dataclass
class _Client:
    fingerprints: deque = field(default_factory=deque)
    digests: deque = field(default_factory=deque)
    digest_set: set = field(default_factory=set)
    recent: deque = field(default_factory=deque)  # 1 for a near query, 0 otherwise; the last `window`
    flagged: bool = False
    queries: int = 0
    flags: int = 0


class QueryWatch:
    """Per-client histories of image fingerprints, flagging query-attack patterns (module docstring).

    Args:
        history: fingerprints kept per client (the oldest dropped first). Default 2000.
        radius: the RMS thumbnail distance (grey units in [0, 1]) within which two queries are
            near. Default 0.03.
        neighbours: near earlier queries that make a query count as near. Default 20.
        window: the client's last queries over which the near rate is taken. Default 50.
        max_near_rate: the fraction of near queries in the window above which the client is
            flagged. Default 0.2.
        max_clients: clients remembered (the least recently seen forgotten first), bounding
            memory at about ``max_clients * history`` kB. Default 1000.

    Not thread-safe: one caller at a time (the guard server holds a lock around it).

    >>> import numpy as np
    >>> watch = QueryWatch(neighbours=3, window=10, max_near_rate=0.2)
    >>> rng = np.random.default_rng(0)
    >>> base = rng.random((1, 32, 32))
    >>> verdicts = [watch.observe("mallory", np.clip(base + rng.normal(0, 0.01, base.shape), 0, 1))
    ...             for _ in range(10)]
    >>> [v.near for v in verdicts][:5], verdicts[-1].flagged
    ([False, False, False, True, True], True)
    >>> watch.observe("alice", base).flagged  # another client's history is its own
    False
    """

    def __init__(self, history: int = 2000, radius: float = 0.03, neighbours: int = 20, window: int = 50,
                 max_near_rate: float = 0.2, max_clients: int = 1000) -> None:
        for name, value in (("history", history), ("neighbours", neighbours), ("window", window),
                            ("max_clients", max_clients)):
            if int(value) < 1 or int(value) != value:
                raise ValueError(f"query watch: {name} must be a whole number of at least 1, got {value}")
        if not radius > 0:
            raise ValueError(f"query watch: radius must be positive (an RMS grey-level distance such as 0.03), got {radius}")
        if not 0.0 <= max_near_rate < 1.0:
            raise ValueError(f"query watch: max_near_rate must be a fraction in [0, 1), got {max_near_rate}")
        if neighbours > history:
            raise ValueError(f"query watch: neighbours ({neighbours}) cannot exceed the history kept ({history})")
        self.history, self.radius, self.neighbours = int(history), float(radius), int(neighbours)
        self.window, self.max_near_rate, self.max_clients = int(window), float(max_near_rate), int(max_clients)
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def settings(self) -> dict[str, float | int | str]:
        """The watch's settings, JSON-ready (``GET /v1/guard`` shows them)."""
        return {"fingerprint": f"{FINGERPRINT_SIDE}x{FINGERPRINT_SIDE} grey block means",
                "distance": "RMS difference of the fingerprints (grey units in [0, 1])",
                "history": self.history, "radius": self.radius, "neighbours": self.neighbours, "window": self.window,
                "max_near_rate": self.max_near_rate, "max_clients": self.max_clients,
                "exact_resends": "not counted"}

    @property
    def flag_after(self) -> int:
        """Near queries in a window that flag a client: the first whole number above the rate."""
        return int(np.floor(self.max_near_rate * self.window)) + 1

    def flagged(self, client: str) -> bool:
        """Whether ``client`` is flagged now."""
        state = self._clients.get(client)
        return bool(state and state.flagged)

    def observe(self, client: str, image: np.ndarray, scale: float = 1.0) -> WatchVerdict:
        """Record one query of ``client`` and judge it.

        Args:
            client: the client's key (a tenant, an address).
            image: (C, H, W) or (H, W) in [0, 1], or a volume (C, D, H, W).
            scale: the thumbnail's values are multiplied by it before any distance, so that
                :attr:`radius`, set for 8-bit images, is the same share of another grid's
                score budget (:func:`grid_scale`: 8.03 on CT, where 0.03 is then 15.3 HU).
                Default 1.0.

        Returns:
            The :class:`WatchVerdict` after this query.
        """
        state = self._client(client)
        state.queries += 1
        digest = image_digest(image)
        if digest in state.digest_set:
            near_now = sum(state.recent)
            return WatchVerdict(0, False, True, state.flagged, near_now, self._reason(state, near_now))
        fp = fingerprint(image) * np.float32(scale)
        count = 0
        if state.fingerprints:
            stack = np.stack(state.fingerprints)
            rms = np.sqrt(np.mean((stack - fp) ** 2, axis=1))
            count = int(np.count_nonzero(rms <= self.radius))
        near = count >= self.neighbours
        self._remember(state, fp, digest, near)
        near_now = sum(state.recent)
        if near_now >= self.flag_after and not state.flagged:
            state.flagged, state.flags = True, state.flags + 1
        elif near_now == 0 and len(state.recent) >= self.window:
            state.flagged = False
        return WatchVerdict(min(count, self.neighbours), near, False, state.flagged, near_now,
                            self._reason(state, near_now))

    def _client(self, client: str) -> _Client:
        state = self._clients.pop(client, None) or _Client()
        self._clients[client] = state  # most recently seen last
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return state

    def _remember(self, state: _Client, fp: np.ndarray, digest: bytes, near: bool) -> None:
        state.fingerprints.append(fp)
        state.digests.append(digest)
        state.digest_set.add(digest)
        if len(state.fingerprints) > self.history:
            state.fingerprints.popleft()
            state.digest_set.discard(state.digests.popleft())
        state.recent.append(1 if near else 0)
        if len(state.recent) > self.window:
            state.recent.popleft()

    def _reason(self, state: _Client, near_now: int) -> str:
        if not state.flagged:
            return ""
        return (f"query-attack watch: {near_now} of this client's last {len(state.recent)} queries each had at least "
                f"{self.neighbours} near-identical earlier queries (RMS distance <= {self.radius:g} on "
                f"{FINGERPRINT_SIDE}x{FINGERPRINT_SIDE} grey thumbnails), the pattern of a query-based attack "
                "(Square, boundary) that clinical clients do not produce; answers are withheld until a window of "
                f"{self.window} queries holds no such query")
