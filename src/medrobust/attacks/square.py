"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), L-infinity, score-based.

"Square Attack: a query-efficient black-box adversarial attack via random search",
https://arxiv.org/abs/1912.00049. The attacker sees only the model's scores (probabilities),
never a gradient, so it works on black boxes (an ONNX file, a vendor's API) and is not fooled
by gradient masking. Random search over the vertices of the eps-ball::

    x_best = Clip_[0,1](x + eps * s),  s ~ U{-1, +1}^(C x 1 x W)          (vertical stripes)
    for i = 1 .. N-1, while the image is not yet adversarial:
        h     = round(sqrt(p(i) * H * W)), clipped to [1, min(H, W) - 1]    (side of the square)
        pick a random h x h window; set the perturbation inside it to eps * r_c with
        r_c ~ U{-1, +1} per channel (resampled while it would change nothing)
        x_new = Clip_{[0,1]}(x + delta_new)
        if L(x_new) < L(x_best): x_best = x_new                              (greedy acceptance)

with the untargeted margin loss ``L = log p_y - max_{k != y} log p_k`` (equal to the logit
margin ``z_y - max_{k != y} z_k`` for a softmax model) and, for targeted attacks, the
cross-entropy ``L = -log p_t`` as in the paper. ``p(i)`` is the paper's piecewise-constant
schedule (:func:`square_p_schedule`): ``p_init`` halved at 10, 50, 200, 500, 1000, 2000, 4000,
6000 and 8000 of 10,000 iterations, rescaled to the query budget as the authors' code does.

Output kinds beyond softmax (documented choices; the paper treats only softmax):

* ``binary`` (one logit z, decision ``sigmoid(z) > t``): the margin is the log-odds of the
  true class against the decision threshold, ``(2y - 1) * (z - logit(t))`` — the softmax
  margin of the two-class model ``[0, z]`` when t = 0.5. Targeted to class t is untargeted
  away from 1 - t, so the same margin is used (towards the target).
* ``multilabel`` (one logit per finding): per named finding k the signed margin
  ``m_k = (2y_k - 1) * (z_k - logit(t))`` (> 0: decided correctly). Untargeted success is
  "any named finding flipped", so the loss is ``min_k m_k`` — the finding closest to flipping.
  Targeted (``y`` the wanted 0/1 findings): ``sum_k softplus(-m_k)``, the binary
  cross-entropy towards the target decisions (the analogue of the paper's targeted CE); success
  when every named finding has the wanted decision. ``findings`` (names) restrict both to
  those findings; None means all.

Volumes (B, C, D, H, W): the squares become **cubes** (boxes where the volume is thin): a
window of side ``s = round((p D H W)^(1/3))`` voxels along each axis, clipped per axis to
``[1, n - 1]`` for an axis of ``n`` voxels, so it covers the schedule's fraction ``p`` of the
voxels as the square covers ``p`` of the pixels (up to the clip on a volume of few slices); the
stripes start is ``s ~ U{-1, +1}^(C x 1 x 1 x W)``, constant along depth and rows. Why cubes
rather than one square per slice: the random search works because a contiguous block of the
perturbation at the ball's vertex moves a convolutional network's response much more than
scattered changes do (the paper's argument for squares), and a volume network's 3-D kernels
integrate neighbourhoods across slices as a 2-D one integrates them across rows; a per-slice
square is a cube one slice thin, which the search would spend most of its queries refinding.

Queries are counted per image and include the first look at the clean image: an image the
model already gets wrong (or already classifies as the target) costs exactly 1 query and is
returned as it is. Then one query for the stripes initialisation and one per iteration, so
every image uses at most ``queries``. An image stops being queried as soon as it is
adversarial. After a call, :attr:`SquareAttack.last_queries` (B,) holds the queries each image
used and :attr:`SquareAttack.last_success` (B,) whether the returned image fools the model.

Storage format: with ``quantize_bits`` set, the clean start and every candidate are rounded
to the grid inside the ball (:func:`~medrobust.attacks.budget.quantize_within`) *before* they
are queried, so the returned image is exactly the last accepted query and ``last_success`` is
the success of what reaches a PACS, with no extra query. For an image already on the 8-bit grid
and eps a whole number of grey levels this changes nothing: the ball's vertices are grid
points.

On a GPU the search reads one small tensor back per iteration: which images are still searching
(an image stops being queried once it is adversarial, so the next query's batch depends on the
last answers), plus one per round of redrawn windows. Everything else stays on the device, and
a black-box model (ONNX) crosses to the host for its own forward pass anyway.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medrobust.attacks.budget import Budget, quantize_within
from medrobust.attacks.engine import Attack
from medrobust.attacks.registry import register_attack
from medrobust.data.class_names import class_indices
from medrobust.models.output_kind import OutputKind

log = logging.getLogger(__name__)

# The paper's schedule: iteration thresholds (out of 10,000) after which p_init is halved again.
_SCHEDULE_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, 10000)
# How often a window whose new signs would change nothing is redrawn (the paper: until it changes).
_MAX_REDRAWS = 32


def square_p_schedule(p_init: float, iteration: int, n_iters: int) -> float:
    """Fraction of pixels the square covers at ``iteration`` of ``n_iters`` (paper, Sec. 4).

    The iteration is rescaled to the 10,000-query reference budget, ``i' = floor(i / N * 10000)``;
    then ``p = p_init`` for ``i' <= 10``, ``p_init / 2`` for ``10 < i' <= 50``, ``/ 4`` up to 200,
    ``/ 8`` up to 500, ``/ 16`` up to 1000, ``/ 32`` up to 2000, ``/ 64`` up to 4000, ``/ 128``
    up to 6000, ``/ 256`` up to 8000 and ``/ 512`` up to 10000.

    Args:
        p_init: the fraction at the start, in (0, 1].
        iteration: i, counted from 0.
        n_iters: N, the iterations of the budget (the attack's ``queries - 1``).

    Returns:
        p, a fraction in (0, ``p_init``].

    Example:

    >>> square_p_schedule(0.8, 0, 1000), square_p_schedule(0.8, 3, 1000), square_p_schedule(0.8, 999, 1000)
    (0.8, 0.4, 0.0015625)
    """
    scaled = int(iteration / max(n_iters, 1) * 10000)
    if scaled <= _SCHEDULE_BOUNDS[0]:
        return p_init
    for halvings, bound in enumerate(_SCHEDULE_BOUNDS[1:], start=1):
        if scaled <= bound:
            return p_init / 2**halvings
    return p_init


def window_sides(p: float, extent: Sequence[int]) -> tuple[int, ...]:
    """The window's side along each spatial axis for the fraction ``p``: images (H, W), the paper's
    square ``h = round(sqrt(p H W))`` clipped to ``[1, min(H, W) - 1]``; volumes (D, H, W), a cube
    ``s = round((p D H W)^(1/3))`` clipped per axis to ``[1, n - 1]`` (a box on a thin volume).

    >>> window_sides(0.1, (32, 32)), window_sides(0.1, (16, 32, 32)), window_sides(0.8, (4, 64, 64))
    ((10, 10), (12, 12, 12), (3, 24, 24))
    """
    if len(extent) == 2:
        h, w = extent
        side = min(max(int(round(math.sqrt(p * h * w))), 1), min(h, w) - 1)
        return side, side
    side = max(int(round((p * math.prod(extent)) ** (1.0 / len(extent)))), 1)
    return tuple(min(side, n - 1) for n in extent)


def _threshold_logit(model: nn.Module) -> float:
    contract = getattr(model, "contract", None)
    t = float(getattr(contract, "threshold", 0.5))
    if not 0.0 < t < 1.0:
        raise ValueError(f"the model's decision threshold must lie in (0, 1), got {t}")
    return math.log(t / (1.0 - t))


class SquareObjective:
    """The loss the random search minimises and the success test, for one output kind.

    ``__call__(logits, y) -> (loss (B,), success (B,) bool)``; success uses the model's own
    decision rule (argmax, or sigmoid above its threshold), so it is exactly "the prediction
    changed" (untargeted) or "the prediction is the target" (targeted).
    """

    def __init__(self, kind: OutputKind, targeted: bool, threshold_logit: float = 0.0,
                 finding_index: Sequence[int] | None = None) -> None:
        self.kind = kind
        self.targeted = targeted
        self.shift = threshold_logit
        self.finding_index = list(finding_index) if finding_index is not None else None
        self._index_on: dict[torch.device, torch.Tensor] = {}  # finding_index per device, copied once

    @classmethod
    def for_model(cls, model: nn.Module, y: torch.Tensor, targeted: bool,
                  findings: Sequence[str] | None) -> "SquareObjective":
        kind = OutputKind.parse(getattr(model, "output_kind", OutputKind.SOFTMAX))
        index = None
        if kind is OutputKind.MULTILABEL:
            if y.ndim != 2:
                raise ValueError(f"a multilabel model needs 0/1 findings of shape (B, K) as labels, got {tuple(y.shape)}")
            if findings:
                index = class_indices(findings, list(getattr(model, "classes", [])))
        elif y.ndim != 1:
            raise ValueError(f"a {kind.value} model needs class indices of shape (B,) as labels, got {tuple(y.shape)}")
        shift = _threshold_logit(model) if kind is not OutputKind.SOFTMAX else 0.0
        return cls(kind, targeted, shift, index)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits.float()
        if self.kind is OutputKind.SOFTMAX:
            logp = F.log_softmax(logits, dim=1)
            own = logp.gather(1, y.long()[:, None])[:, 0]
            pred = logits.argmax(dim=1)
            if self.targeted:
                return -own, pred == y
            others = logp.scatter(1, y.long()[:, None], float("-inf")).amax(dim=1)
            return own - others, pred != y
        z = logits - self.shift
        if self.kind is OutputKind.BINARY:
            margin = (2.0 * y.float() - 1.0) * z[:, 0]
            decided = (z[:, 0] > 0).long()
            if self.targeted:
                return -margin, decided == y.long()
            return margin, decided != y.long()
        if self.finding_index is None:
            zf, yf = z, y.float()
        else:
            if z.device not in self._index_on:
                self._index_on[z.device] = torch.tensor(self.finding_index, dtype=torch.long).to(z.device)
            index = self._index_on[z.device]
            zf, yf = z.index_select(1, index), y.index_select(1, index.to(y.device)).float()
        margins = (2.0 * yf - 1.0) * zf
        decided = (zf > 0).float()
        if self.targeted:
            return F.softplus(-margins).sum(dim=1), (decided == yf).all(dim=1)
        return margins.amin(dim=1), (decided != yf).any(dim=1)


@register_attack("square")
class SquareAttack(Attack):
    """Square Attack (Andriushchenko et al., ECCV 2020): score-based black-box L-inf attack.

    Paper: Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient
    black-box adversarial attack via random search", ECCV 2020. Random search over the
    vertices of the eps-ball: start from vertical stripes ``x + eps * s``, then repeatedly set
    a random h x h square of the perturbation to ``±eps`` per channel and keep the candidate
    when the margin loss ``L = log p_y - max_{k != y} log p_k`` decreases; the square's side
    follows the paper's schedule ``h = round(sqrt(p(i) H W))`` (module docstring).

    Needs only the model's outputs, queried under ``torch.no_grad()``, so it runs on black
    boxes (``OnnxClassifier``) as well as on torch models. See the module docstring for the
    algorithm, the losses per output kind and how queries are counted.

    Args:
        eps: the L-inf budget in [0, 1] image units, > 0. Default 8/255 (8 grey levels, the
            common benchmark budget).
        queries: the most model queries per image, the look at the clean image included; at
            least 1. Default 1000 (medrobust's; the paper used 10,000).
        p_init: the initial fraction of pixels a square covers, in (0, 1]. Default 0.8
            (AutoAttack's choice for L-inf; the paper used 0.05 on ImageNet with 10,000 queries).
        targeted: search towards ``y`` (then the targets). Default False.
        findings: for a multilabel model, the names of the findings to attack (a list, or one
            string separated by ``,`` or ``;``). Default None: all.
        batch_size: images per forward pass, at least 1. Default 256.
        seed: seed of the ``torch.Generator`` when the call is given none. Default 0.
        quantize_bits: storage bit depth every candidate is rounded to (inside the ball) before
            it is queried. Default 8; None keeps floats.

    Volumes (B, C, D, H, W) are searched with cubes instead of squares (module docstring).

    Shape:
        - x: (B, C, H, W) float in [0, 1], H and W at least 2; or volumes (B, C, D, H, W), each
          side at least 2.
        - y: (B,) int64 labels ((B, K) 0/1 findings for a multilabel model).
        - Output: ``x_adv``, (B, C, H, W), ``x``'s dtype, in [0, 1], within ``eps`` of ``x``.
        - After a call: :attr:`last_queries` (B,) int64, queries used per image;
          :attr:`last_success` (B,) bool, whether the returned image is adversarial (quantised,
          as returned). Both on the CPU.

    Example:

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32).eval()
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> y = model(x).argmax(dim=1)  # the model's own answers: the attack must change them
    >>> attack = SquareAttack(eps=8 / 255, queries=50)
    >>> x_adv = attack(model, x, y)
    >>> x_adv.shape, bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6)
    (torch.Size([2, 1, 32, 32]), True)
    >>> attack.last_queries.shape, bool(attack.last_queries.max() <= 50), attack.last_success.dtype
    (torch.Size([2]), True, torch.bool)
    >>> torch.equal(attack.last_success, model(x_adv).argmax(dim=1) != y)
    True
    """

    needs_gradients = False

    def __init__(self, eps: float = 8 / 255, queries: int = 1000, p_init: float = 0.8, targeted: bool = False,
                 findings: list[str] | None = None, batch_size: int = 256, seed: int = 0,
                 quantize_bits: int | None = 8) -> None:
        super().__init__(seed=seed, quantize_bits=quantize_bits)
        if not eps > 0:
            raise ValueError(f"square: eps must be positive, got {eps}")
        if queries < 1:
            raise ValueError(f"square: queries must be at least 1 (the look at the clean image), got {queries}")
        if not 0.0 < p_init <= 1.0:
            raise ValueError(f"square: p_init must lie in (0, 1], got {p_init}")
        if batch_size < 1:
            raise ValueError(f"square: batch_size must be at least 1, got {batch_size}")
        self.eps = float(eps)
        self.queries = int(queries)
        self.p_init = float(p_init)
        self.targeted = bool(targeted)
        if isinstance(findings, str):
            findings = [f.strip() for f in findings.replace(";", ",").split(",") if f.strip()]
        self.findings = list(findings) if findings else None
        self.batch_size = int(batch_size)
        self._last_queries: torch.Tensor | None = None
        self._last_success: torch.Tensor | None = None

    @property
    def budget(self) -> Budget:
        return Budget(self.eps, "linf")

    @property
    def last_queries(self) -> torch.Tensor | None:
        """(B,) int64: model queries each image of the last call used (clean look included)."""
        return self._last_queries

    @property
    def last_success(self) -> torch.Tensor | None:
        """(B,) bool: whether each returned image of the last call fools the model."""
        return self._last_success

    # --- pieces ---------------------------------------------------------------------------------
    def _query(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x``, in batches, without gradients (a black box is fine)."""
        with torch.no_grad():
            return torch.cat([model(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])

    def _quantiser(self, x: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Project a candidate onto [0, 1] and the ball, then (if enabled) onto the storage grid."""
        bits = self.quantize_bits
        if bits is not None and self.eps * (2**bits - 1) < 1.0 - 1e-6:
            log.warning("square: eps %.4g is below one grey level at %d bits; leaving images unquantised",
                        self.eps, bits)
            bits = None

        def project(candidate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
            candidate = self.budget.project(candidate, clean)
            return candidate if bits is None else quantize_within(candidate, clean, self.budget, bits)

        return project

    def _window_candidates(self, x: torch.Tensor, best: torch.Tensor, sides: int | Sequence[int], generator: torch.Generator,
                           project: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One square (volumes: cube) update per image: a random window of ``sides`` (one per
        spatial axis, or one for all) set to ``±eps`` per channel.

        Windows whose new signs would leave the image unchanged are redrawn (signs only, as in the
        authors' code), at most ``_MAX_REDRAWS`` times.
        """
        n, c, *extent = x.shape
        dev = x.device
        if isinstance(sides, int):
            sides = (sides,) * len(extent)
        # any position where the window fits; the authors' code draws randint(0, h - s), whose
        # exclusive bound never lets a window reach the last row and column. One start per axis,
        # drawn in axis order (depth, rows, columns).
        starts = [torch.randint(0, size - side + 1, (n,), generator=generator, device=dev)
                  for size, side in zip(extent, sides)]
        window = torch.ones((n, *([1] * len(extent))), dtype=torch.bool, device=dev)
        for axis, (size, side, start) in enumerate(zip(extent, sides, starts)):
            index = torch.arange(size, device=dev)[None, :]
            inside = (index >= start[:, None]) & (index < start[:, None] + side)  # (n, size)
            shape = [n] + [1] * len(extent)
            shape[1 + axis] = size
            window = window & inside.view(shape)
        window = window[:, None]  # (n, 1, *spatial)
        delta = best - x
        ones = (1,) * len(extent)
        signs = torch.randint(0, 2, (n, c, *ones), generator=generator, device=dev).to(x.dtype) * 2 - 1
        candidate = project(x + torch.where(window, signs * self.eps, delta), x)
        for _ in range(_MAX_REDRAWS):
            same = ((candidate - best).abs() < 1e-7).flatten(1).all(dim=1)
            idx = same.nonzero()[:, 0]  # the round's one read from the device: which windows change nothing
            if not len(idx):
                break
            redraw = torch.randint(0, 2, (len(idx), c, *ones), generator=generator, device=dev).to(x.dtype) * 2 - 1
            signs[idx] = redraw
            candidate[idx] = project(x[idx] + torch.where(window[idx], signs[idx] * self.eps, delta[idx]), x[idx])
        return candidate

    # --- the search -----------------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            return self._search(model, x, y, generator)

    def _search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c, *extent = x.shape
        if min(extent) < 2:
            what = "volumes must be at least 2 x 2 x 2 voxels" if len(extent) == 3 else "images must be at least 2 x 2 pixels"
            raise ValueError(f"square: {what}, got {' x '.join(map(str, extent))}")
        if len(y) != b:
            raise ValueError(f"square: {b} images but {len(y)} labels")
        objective = SquareObjective.for_model(model, y, self.targeted, self.findings)
        project = self._quantiser(x)
        y = y.to(x.device)

        # query 1: the (grid-rounded) clean image; images already fooled stop here
        best = project(x.clone(), x)
        loss_best, success = objective(self._query(model, best), y)
        n_queries = torch.ones(b, dtype=torch.long, device=x.device)

        # query 2: vertical stripes, x + eps * s with s in {-1, +1}^(C x 1 x W), taken unconditionally
        active = (~success).nonzero()[:, 0]
        if self.queries >= 2 and len(active):
            xa = x[active]
            stripe_shape = (len(active), c, *([1] * (len(extent) - 1)), extent[-1])  # constant along all but W
            stripes = torch.randint(0, 2, stripe_shape, generator=generator, device=x.device).to(x.dtype)
            candidate = project(xa + (stripes * 2 - 1) * self.eps, xa)
            loss, succ = objective(self._query(model, candidate), y[active])
            best[active], loss_best[active], success[active] = candidate, loss, succ
            n_queries[active] += 1

        n_iters = self.queries - 1  # the paper's N: its count starts at the stripes query
        for i in range(self.queries - 2):
            active = (~success).nonzero()[:, 0]
            if not len(active):
                break
            p = square_p_schedule(self.p_init, i, n_iters)
            xa, best_a = x[active], best[active]
            candidate = self._window_candidates(xa, best_a, window_sides(p, extent), generator, project)
            loss, succ = objective(self._query(model, candidate), y[active])
            n_queries[active] += 1
            # greedy acceptance (strict improvement, as the paper); a candidate that is already
            # adversarial is always kept, since it ends this image's search
            accept = (loss < loss_best[active]) | succ
            best[active] = torch.where(accept.view(-1, *([1] * (x.ndim - 1))), candidate, best_a)
            loss_best[active] = torch.where(accept, loss, loss_best[active])
            success[active] = success[active] | (accept & succ)

        self._last_queries = queries = n_queries.cpu()
        self._last_success = fooled = success.cpu()
        log.info("square: %d of %d images adversarial (eps %.4g); queries per image: mean %.1f, max %d of %d",
                 int(fooled.sum()), b, self.eps, float(queries.float().mean()), int(queries.max()), self.queries)
        return best
