"""Total variation denoising (Rudin, Osher & Fatemi 1992), the TV stage of the study's defense.

The study's objective (its Appendix D), for an image ``f`` (= ``I_jpeg``) in [0, 1]::

    I_tvm = argmin_u  ||f - u||^2 + lambda * TV(u),
    TV(u) = sum_ij sqrt((u[i+1,j] - u[i,j])^2 + (u[i,j+1] - u[i,j])^2)        (isotropic)

**Scaling of ``weight``.** ``weight`` here *is* the study's ``lambda``, on images in [0, 1]:
``tv_denoise(f, weight=0.1)`` minimises exactly ``||f - u||^2 + 0.1 * TV(u)``. Dividing by two,
this is ``1/2 ||f - u||^2 + (weight / 2) TV(u)``, which is scikit-image's problem:
``denoise_tv_chambolle(image, weight=w)`` minimises ``sum_i |grad u_i| + (1 / (2 w)) (f_i - u_i)^2``
(its docstring: ``lambda_sk = 1 / w``), i.e. ``1/2 ||f - u||^2 + w TV(u)``. Hence

    scikit-image weight  =  weight / 2        (the study's lambda 0.1 -> scikit-image 0.05),

see :func:`skimage_weight`. It is also Beck & Teboulle's (2009) ``min ||u - f||^2 + 2 lambda_BT TV(u)``
with ``lambda_BT = weight / 2``. Both use the same discretisation as here: forward differences,
Neumann boundary (differences across the last row/column are zero), channels of a colour image
denoised independently (scikit-image with ``channel_axis``). A ``lambda`` meant for 0..255
images corresponds to ``weight = lambda / 255`` here.

**Solver.** ``method="fgp"`` (default): Beck & Teboulle's fast gradient projection on the dual,
``u = f + w div p`` with ``|p_ij| <= 1`` and ``w = weight / 2``; step ``1 / (8 w)`` (``||grad||^2 <= 8``)
and Nesterov momentum, error ``O(1/k^2)``. ``method="chambolle"``: Chambolle's (2004) projection
algorithm with step 1/4, the same iteration as scikit-image (its iterate after ``n`` updates equals
``denoise_tv_chambolle(..., eps=0, max_num_iter=n + 1)``). Both are batched: every image and
channel of the batch is updated by the same tensor operations, on any device, in float32 (float64
for float64 inputs).

**Stopping rule.** Per image, every ``CHECK_EVERY = 4`` iterations the primal image of the current
dual iterate, ``u_k = f + w div p_k``, is compared with the one of the previous check: stop when

    RMS(u_k - u_{k-4}) <= 4 * tol        (root mean square over the image's channels and pixels)

i.e. the image changed by at most ``tol`` per iteration over the window, in image units ([0, 1],
so the rule means the same for dark and bright images); in any case after ``max_iter`` dual
updates. The window smooths the momentum's oscillations, which make single-step changes of FGP
iterates dip early and stop too soon; the first window (from ``f`` to ``u_4``) holds the initial
transient and never stops an image, so the earliest stop is after 8 iterations. A converged image
leaves the batch (its result is fixed there), so an image's output does not depend on its
batch-mates. scikit-image instead stops when the energy change ``|E_{k-1} - E_k| < eps * E_0``
(default ``eps = 2e-4``, at most 200 iterations). The default ``tol = 1.5e-3`` is as accurate as
scikit-image's defaults: on phantoms (clean, noisy, with sign noise of 8/255) at 224 and 64 px
and lambda 0.02-0.5, the mean PSNR from the exact minimiser was above scikit-image's and the
worst image's within 0.2 dB of it or above (at the study's lambda and 224 px, 32 images: ours
worst 45.9 dB, mean 48.4 dB; scikit-image 42.6 dB, 45.8 dB), in about 8-12 iterations against
its 10-20. ``tol = 1e-3`` gives about 50 dB; ``tol = 0`` runs exactly ``max_iter`` iterations.

**Volumes.** A batch of volumes (B, C, D, H, W) is denoised in 3-D, with the differences along
depth, rows and columns (scikit-image's n-D TV: ``denoise_tv_chambolle`` on a 3-D array, at half
the weight), and the voxel spacing respected: ``spacing=(dz, dy, dx)`` weights each axis' difference
by ``w_a = min(spacing) / spacing_a`` (:func:`~medrobust.defenses.tv_operators.spacing_weights`; the
formula and why in :mod:`medrobust.defenses.tv_operators`), so thick slices are smoothed across
less than thin pixels; default isotropic (every weight 1). The step sizes follow the operator's
norm bound ``L = 4 sum_a w_a^2`` (8 for images, 12 for isotropic volumes): FGP's step is
``1 / (L w)`` and Chambolle's ``2 / L`` (1/4 for images, 1/6 for volumes, scikit-image's
``1 / (2 ndim)``).

**Device.** The solvers run on the input's device (every buffer is made there). On a GPU they
read one number back per convergence check (how many images are done, to drop them from the
batch or stop), none between checks.

**Speed.** On the CPU the batch is solved in groups of about one 224 px image per torch intra-op
thread (:func:`solver_chunk_size`), so that every elementwise pass is split across the threads
while each thread's share of the buffers stays in its core's cache. ``benchmarks/bench_defenses.py``
compares it with scikit-image's per-image loop, at both defaults and at equal iteration counts;
the dated figures are in ``benchmarks/README.md``.

**Gradients.** The solver is a fixed sequence of differentiable tensor operations, but the
defense declares ``differentiable = False``: by default it runs without autograd (in place, fast),
and an adaptive attacker uses BPDA. With ``exact_gradients=True`` the unrolled iterations are
recorded by autograd (memory grows with the iteration count), and the module says
``differentiable = True``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch

from medrobust.data.image_batch import check_image_batch
from medrobust.defenses.base import Defense, working_dtype
from medrobust.defenses.registry import register_defense
from medrobust.defenses.tv_operators import (
    DualBuffer,
    ImageBuffer,
    Weights,
    add_divergence_into,
    divergence,
    gradient,
    gradient_into,
    gradient_norm_squared,
    image_norms,
    spacing_weights,
)

log = logging.getLogger(__name__)

METHODS = ("fgp", "chambolle")
CHAMBOLLE_STEP = 0.25
"""Chambolle's (2004) step ``tau <= 1/8`` in his scaling, 1/4 in practice, as scikit-image uses (for
images; ``2 / L`` in general, :func:`chambolle_step`)."""
CHECK_EVERY = 4
"""Iterations between two convergence checks (the window of the stopping rule)."""
DEFAULT_TOL = 1.5e-3
"""RMS change per iteration (image units) that stops an image; see the module docstring."""
HU_TV = "tv:weight=0.001,tol=1e-05"
"""TV for CT in HU (the spec a preset, the CT demo and the CT squeeze detector use). On the CT grid
1 HU is 1/4095 of the currency, so the study's weight 0.1 (made for 8-bit images) smooths like about
400 HU and wipes out a head CT. Weight 0.001 is about 4 HU, near the attacks' budgets and under the
5-8 HU image noise; 0.004 (16 HU) was chosen first, by the same scaling from a brain window, and
measured otherwise: on the CT demo's model (91.0% clean on its 300 test volumes, seed 0) TV at
weight 0.0005 / 0.001 / 0.002 / 0.004 left 91.7 / 89.0 / 80.7 / 49.0% clean accuracy, the last a
defense no one would deploy. The tolerance is in HU too: 1e-5 is 0.04 HU per iteration, where the
default 1.5e-3 is 6 HU and stops TV before it moves."""
CPU_CHUNK_ELEMENTS = 1 << 16
"""Values per image group and intra-op thread on the CPU (cache blocking; about one 224 x 224
image per thread)."""


def skimage_weight(weight: float) -> float:
    """The ``weight`` of ``skimage.restoration.denoise_tv_chambolle`` that solves the same problem
    as ``tv_denoise(x, weight)``: ``weight / 2`` (see the module docstring).

    Args:
        weight: the study's lambda (this module's ``weight``).

    Returns:
        scikit-image's weight, ``weight / 2``.
    """
    return weight / 2.0


def check_tv_parameters(weight: float, max_iter: int, tol: float, method: str = "fgp") -> None:
    """Raise a clear error for a TV setting out of range."""
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"TV weight must be a finite number >= 0 (the study's lambda, e.g. 0.1), got {weight}")
    if int(max_iter) < 1:
        raise ValueError(f"TV max_iter must be at least 1, got {max_iter}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"TV tol must be a finite number >= 0 (RMS change per iteration, e.g. 1.5e-3), got {tol}")
    if method not in METHODS:
        raise ValueError(f"TV method must be one of {', '.join(METHODS)}, got {method!r}")


def chambolle_step(spatial_dims: int, weights: Weights) -> float:
    """Chambolle's step ``2 / L`` (``L``: :func:`~medrobust.defenses.tv_operators.gradient_norm_squared`):
    :data:`CHAMBOLLE_STEP` for images, 1/6 for isotropic volumes."""
    norm = gradient_norm_squared(spatial_dims, weights)
    return CHAMBOLLE_STEP if norm == 8.0 else 2.0 / norm


def _primal(f: torch.Tensor, p: torch.Tensor, w: float, weights: Weights = None) -> torch.Tensor:
    return f + w * divergence(*p.unbind(1), weights=weights)


def _squared_sum(parts: torch.Tensor) -> torch.Tensor:
    """``sum_a parts[:, a]^2`` over a dual field's components (B, n, ...), added in order."""
    squared = parts[:, 0] ** 2
    for a in range(1, parts.shape[1]):
        squared = squared + parts[:, a] ** 2
    return squared


def _safe_norm(*parts: torch.Tensor) -> torch.Tensor:
    """``sqrt(a^2 + b^2 (+ c^2))`` whose gradient at 0 is 0 instead of NaN."""
    squared = parts[0] * parts[0]
    for p in parts[1:]:
        squared = squared + p * p
    positive = squared > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, squared, torch.ones_like(squared))), 0.0)


def _fgp_momentum(t: float) -> tuple[float, float]:
    """FISTA's ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2`` and the extrapolation ``(t_k - 1) / t_{k+1}``."""
    t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
    return t_next, (t - 1.0) / t_next


def _solve_inplace(out: torch.Tensor, f: torch.Tensor, w: float, max_iter: int, tol: float, method: str,
                   weights: Weights = None) -> None:
    """The solver without autograd, writing each image's result into ``out``: preallocated
    buffers, in-place updates, and converged images removed from the batch at each check.

    Each iteration takes the gradient of the scaled primal ``v = s u(r) = s f + s w div r``
    (``s = 1 / (8 w)`` for FGP, ``tau / w`` for Chambolle, so no separate scaling pass), written
    straight into the next dual's buffer: thirteen elementwise passes per FGP iteration.
    """
    index = torch.arange(f.shape[0], device=f.device)
    limit = tol * math.sqrt(f[0].numel())  # on ||u_k - u_ref||: RMS change per iteration <= tol
    spatial_dims = f.ndim - 2
    norm = gradient_norm_squared(spatial_dims, weights)
    scale = 1.0 / (norm * w) if method == "fgp" else chambolle_step(spatial_dims, weights) / w
    f_scaled = f * scale
    p, step = DualBuffer.zeros(f), DualBuffer.zeros(f)  # step: the next p (for Chambolle grad v)
    r = DualBuffer.zeros(f) if method == "fgp" else p
    v, u_check, u_ref, magnitude = (ImageBuffer(torch.empty_like(f)) for _ in range(4))
    t, last_check = 1.0, 0
    for k in range(1, max_iter + 1):
        gradient_into(step, add_divergence_into(v, f_scaled, r, scale * w, weights), weights)
        if method == "fgp":
            step.data.add_(r.data)  # r + grad u(r) / (8 w)
            step.squared_magnitude_into(magnitude.data).clamp_(min=1.0).sqrt_()
            step.data.div_(magnitude.spread)  # onto |p_ij| <= 1
            t, c = _fgp_momentum(t)
            torch.lerp(p.data, step.data, 1.0 + c, out=r.data)  # r = p_new + c (p_new - p)
            p, step = step, p
        else:  # Chambolle: p <- (p + tau/w grad u) / (1 + tau/w |grad u|)
            step.squared_magnitude_into(magnitude.data).sqrt_().add_(1.0)
            p.data.add_(step.data).div_(magnitude.spread)
        if k % CHECK_EVERY and k < max_iter:
            continue
        add_divergence_into(u_check, f, p, w, weights)
        if last_check == 0 and k < max_iter:  # the first window holds the initial transient from f
            u_ref, u_check, last_check = u_check, u_ref, k
            continue
        done = image_norms(torch.sub(u_check.data, u_ref.data, out=magnitude.data)) <= limit * (k - last_check)
        running = store_converged(out, index, done, u_check.data, k == max_iter, tol, "TV")
        if running is None:
            return
        if len(running) < len(index):
            index, f, f_scaled = index[running], f[running], f_scaled[running]
            p, step = DualBuffer(p.data[running]), DualBuffer(step.data[running])
            u_check = ImageBuffer(u_check.data[running])
            r = DualBuffer(r.data[running]) if method == "fgp" else p
            v, u_ref, magnitude = (ImageBuffer(torch.empty_like(f)) for _ in range(3))
        u_ref, u_check, last_check = u_check, u_ref, k


def store_converged(out: torch.Tensor, index: torch.Tensor, done: torch.Tensor, u: torch.Tensor, last: bool,
                    tol: float, solver: str) -> torch.Tensor | None:
    """At a convergence check of an in-place solver: write the images that are ``done`` (all of
    them at the ``last`` iteration) from ``u`` into their rows ``index`` of ``out``. Returns None
    when no image is left, else the positions in the batch of the images still running, in order
    (all of them when none is done).

    The check's one read from the device is the number of images done (none at the last
    iteration, unless debug logging counts the images that hit ``max_iter``); which they are is
    found on the device, by a stable sort of ``done``."""
    if last:
        if tol > 0 and log.isEnabledFor(logging.DEBUG):
            left = int((~done).sum())
            if left:
                log.debug("%s: %d image(s) reached max_iter before the tolerance", solver, left)
        _store_all(out, index, u)
        return None
    n_done = int(done.sum())
    if n_done == len(done):
        _store_all(out, index, u)
        return None
    if n_done == 0:
        return torch.arange(len(done), device=done.device)
    order = torch.sort(done.to(torch.uint8), stable=True).indices  # running first, then done; each in batch order
    finished = order[len(done) - n_done:]
    out.index_copy_(0, index[finished], u[finished])
    return order[: len(done) - n_done]


def _store_all(out: torch.Tensor, index: torch.Tensor, u: torch.Tensor) -> None:
    if len(index) == len(out):  # no image left earlier: index is 0..B-1
        out.copy_(u)
    else:
        out.index_copy_(0, index, u)


def _solve_autograd(f: torch.Tensor, w: float, max_iter: int, tol: float, method: str,
                    weights: Weights = None) -> torch.Tensor:
    """The same iterations, out of place so autograd records them; each image's result is fixed
    at its own convergence check, as in :func:`_solve_inplace`."""
    limit = tol * math.sqrt(f[0].numel())
    spatial_dims = f.ndim - 2
    norm = gradient_norm_squared(spatial_dims, weights)
    p = torch.zeros((f.shape[0], spatial_dims, *f.shape[1:]), dtype=f.dtype, device=f.device)
    r, t, last_check = p, 1.0, 0
    out, u_ref = torch.zeros_like(f), f
    done = torch.zeros(f.shape[0], dtype=torch.bool, device=f.device)
    per_image = (-1,) + (1,) * (f.ndim - 1)
    for k in range(1, max_iter + 1):
        grad = torch.stack(gradient(_primal(f, r, w, weights), spatial_dims, weights), dim=1)
        if method == "fgp":
            q = r + grad / (norm * w)
            q = q / torch.sqrt(_squared_sum(q).clamp(min=1.0)).unsqueeze(1)  # finite gradient at 0
            t, c = _fgp_momentum(t)
            r, p = q + c * (q - p), q
        else:
            step = chambolle_step(spatial_dims, weights) / w
            magnitude = _safe_norm(*grad.unbind(1))
            p = r = (p + step * grad) / (1.0 + step * magnitude).unsqueeze(1)
        if k % CHECK_EVERY and k < max_iter:
            continue
        u = _primal(f, p, w, weights)
        if last_check == 0 and k < max_iter:
            u_ref, last_check = u, k
            continue
        newly = (image_norms((u - u_ref).detach()) <= limit * (k - last_check)) | (k == max_iter)
        newly &= ~done
        out = torch.where(newly.view(per_image), u, out)
        done = done | newly
        if bool(done.all()):
            break
        u_ref, last_check = u, k
    return out


def tv_denoise(
    x: torch.Tensor,
    weight: float = 0.1,
    max_iter: int = 200,
    tol: float = DEFAULT_TOL,
    method: str = "fgp",
    exact_gradients: bool = False,
    spacing: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """ROF denoising of a batch: ``argmin_u ||x - u||^2 + weight * TV(u)`` per image (or volume)
    and channel.

    Args:
        x: the images, float in [0, 1].
        weight: the study's lambda on [0, 1] images (scikit-image's weight is ``weight / 2``,
            :func:`skimage_weight`; a lambda meant for 0..255 images is ``lambda / 255`` here).
            A finite number >= 0; 0 returns a copy. Default 0.1 (the study's).
        max_iter: the cap on dual iterations, at least 1. Default 200 (scikit-image's cap).
        tol: the RMS change per iteration, in image units, that stops an image (module
            docstring); >= 0, 0 runs exactly ``max_iter`` iterations. Default 1.5e-3
            (:data:`DEFAULT_TOL`, as accurate as scikit-image's defaults).
        method: ``"fgp"`` (Beck & Teboulle's fast gradient projection) or ``"chambolle"``
            (Chambolle's projection, scikit-image's iteration). Default ``"fgp"``.
        exact_gradients: record the unrolled iterations with autograd (when it is enabled), so
            gradients flow through the solver; memory grows with the iterations. Default False.
        spacing: the voxel spacing, one positive length per spatial axis, depth first ((dz, dy,
            dx) for volumes, (dy, dx) for images); each axis' differences are weighted by
            ``min(spacing) / spacing_a`` (module docstring). Default None: isotropic.

    Returns:
        The denoised images, same shape, dtype and device as ``x``, clamped to [0, 1] (ROF keeps
        values within the input's range; the clamp only removes float rounding). Computed in
        float32 (float64 for float64 inputs).

    Shape:
        - x: (B, C, H, W) float in [0, 1], or volumes (B, C, D, H, W) (denoised in 3-D).
        - Output: ``x``'s shape.

    Raises:
        ValueError: a setting out of range (:func:`check_tv_parameters`), or a spacing that does
            not give one positive length per spatial axis of ``x``.

    Example (the same problem as scikit-image's solver at half the weight, both run to
    convergence):

    >>> import torch
    >>> from skimage.restoration import denoise_tv_chambolle
    >>> x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> ours = tv_denoise(x, weight=0.1, tol=0, max_iter=500)
    >>> theirs = denoise_tv_chambolle(x[0, 0].double().numpy(), weight=0.05, eps=1e-8, max_num_iter=2000)
    >>> ours.shape, bool(abs(ours[0, 0].double().numpy() - theirs).max() < 1e-3)
    (torch.Size([1, 1, 32, 32]), True)
    """
    check_tv_parameters(weight, max_iter, tol, method)
    check_image_batch(x, "tv_denoise")
    weights = spacing_weights(spacing, x.ndim - 2)
    if weight == 0 or x.numel() == 0:
        return x.clone()
    f = x.to(working_dtype(x))
    w = skimage_weight(weight)
    if exact_gradients and torch.is_grad_enabled():
        u = _solve_autograd(f, w, int(max_iter), float(tol), method, weights).clamp(0.0, 1.0)
    else:
        with torch.no_grad():
            u = solve_in_chunks(lambda out, chunk: _solve_inplace(out, chunk, w, int(max_iter), float(tol), method,
                                                                  weights),
                                torch.empty_like(f), f.contiguous()).clamp_(0.0, 1.0)
    return u.to(x.dtype)


def solve_in_chunks(solve: Callable[..., None], out: torch.Tensor, *batches: torch.Tensor) -> torch.Tensor:
    """``solve(out_group, *groups)`` on image groups of :func:`solver_chunk_size` (the same split
    of ``out`` and of every tensor in ``batches``), each writing its results into its slice of
    ``out``; returns ``out``. Results do not depend on the grouping."""
    size = solver_chunk_size(batches[0])
    for group in zip(out.split(size), *(b.split(size) for b in batches)):
        solve(*group)
    return out


def solver_chunk_size(f: torch.Tensor) -> int:
    """Images solved together: the whole batch on a GPU; on the CPU groups of about
    :data:`CPU_CHUNK_ELEMENTS` values per torch intra-op thread, so that each thread's share of
    the solver's dozen buffers stays in its core's cache while every elementwise pass is still
    split across the threads (each group is one vectorised batch)."""
    if f.device.type != "cpu":
        return max(1, f.shape[0])
    return max(1, CPU_CHUNK_ELEMENTS * torch.get_num_threads() // max(1, f[0].numel()))


@register_defense("tv")
class TotalVariation(Defense):
    """ROF total variation denoising as a defense (registered as ``"tv"``); see :func:`tv_denoise`.

    Paper: Rudin, Osher & Fatemi, "Nonlinear total variation based noise removal algorithms",
    Physica D 1992; solvers: Beck & Teboulle, IEEE Trans. Image Processing 2009 (``"fgp"``),
    Chambolle, J. Math. Imaging Vision 2004 (``"chambolle"``). The study's TV stage, per image
    and channel::

        u = argmin_u ||x - u||^2 + weight * TV(u),
        TV(u) = sum_ij sqrt((u[i+1,j] - u[i,j])^2 + (u[i,j+1] - u[i,j])^2)

    Args:
        weight: the study's lambda on [0, 1] images, a finite number >= 0. Default 0.1 (the
            study's; scikit-image weight 0.05).
        max_iter: the cap on iterations, at least 1. Default 200 (scikit-image's cap).
        tol: the RMS change per iteration that stops an image, >= 0. Default 1.5e-3 (medrobust's
            stopping rule, as accurate as scikit-image's defaults; module docstring).
        method: ``"fgp"`` or ``"chambolle"``. Default ``"fgp"``.
        exact_gradients: run the solver under autograd; ``differentiable`` equals it. Default
            False (BPDA; :meth:`exact_variant` gives the exact one).
        spacing: the voxel spacing in mm, one positive length per spatial axis of the images it
            is given, depth first (``(5, 0.5, 0.5)`` for 5 mm CT slices of 0.5 mm pixels; by
            name ``tv:spacing=5;0.5;0.5``); weights ``min(spacing) / spacing_a`` on each axis'
            differences (:mod:`~medrobust.defenses.tv_operators`). Default None: isotropic.

    Volumes (B, C, D, H, W) are denoised in 3-D (module docstring).

    Shape:
        - x: (B, C, H, W) float in [0, 1], or volumes (B, C, D, H, W).
        - Output: ``x``'s shape, same dtype and device, in [0, 1].

    Example:

    >>> import torch
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> out = TotalVariation()(x)
    >>> out.shape, bool(out.min() >= 0 and out.max() <= 1)
    (torch.Size([2, 1, 32, 32]), True)
    >>> from medrobust.defenses.tv_operators import total_variation
    >>> bool((total_variation(out) < total_variation(x)).all())  # smoother: less total variation
    True
    >>> torch.equal(out, tv_denoise(x, weight=0.1))
    True
    """

    name = "tv"

    def __init__(self, weight: float = 0.1, max_iter: int = 200, tol: float = DEFAULT_TOL, method: str = "fgp",
                 exact_gradients: bool = False, spacing: Sequence[float] | None = None) -> None:
        super().__init__()
        check_tv_parameters(weight, max_iter, tol, method)
        self.spacing = _spacing(spacing)
        self.weight = float(weight)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.method = method
        self.exact_gradients = bool(exact_gradients)
        self.differentiable = self.exact_gradients

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return tv_denoise(x, self.weight, self.max_iter, self.tol, self.method, self.exact_gradients, self.spacing)

    def exact_variant(self) -> "TotalVariation":
        """This TV with ``exact_gradients=True``: the same minimiser, its iterations recorded by
        autograd, so an attacker differentiates through the solver exactly.

        Returns:
            ``self`` when it already has exact gradients, else a new :class:`TotalVariation`
            with the same settings.
        """
        if self.exact_gradients:
            return self
        return TotalVariation(self.weight, self.max_iter, self.tol, self.method, exact_gradients=True,
                              spacing=self.spacing)


def _spacing(spacing: Sequence[float] | None) -> tuple[float, ...] | None:
    """A TV defense's ``spacing`` as floats (the registry passes ``5;0.5;0.5`` as a list of texts),
    checked: two or three positive lengths, or None."""
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) not in (2, 3) or not all(0 < v < float("inf") for v in values):
        raise ValueError(f"tv: spacing {spacing!r} must be two or three positive lengths, depth first "
                         "(e.g. 5;0.5;0.5 for 5 mm slices of 0.5 mm pixels), or left out for isotropic voxels")
    return values
