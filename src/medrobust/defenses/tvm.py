"""Randomized total variation minimisation (TVM), Guo, Rana, Cisse & van der Maaten, ICLR 2018,
"Countering Adversarial Images using Input Transformations".

Keep each pixel with probability ``1 - drop_prob`` (a Bernoulli mask ``m``, one draw per pixel
shared by its channels), throw the others away, and reconstruct the simplest image consistent
with the kept pixels::

    u = argmin_u  sum_ij m_ij (u_ij - x_ij)^2 + weight * TV(u)

with the study's isotropic TV (:mod:`medrobust.defenses.total_variation`: same scaling of
``weight``, so ``drop_prob = 0`` gives ``tv_denoise(x, weight)``). Dropped pixels are filled in by
the TV term alone; the result never depends on their values (the solver sees ``m * x`` only).
The defense is randomized: every call draws a new mask from the generator, and an adaptive
attacker averages gradients over draws (EOT, Athalye et al. 2018) with BPDA.

**Solver.** Chambolle & Pock's (2011) primal-dual algorithm, which handles the masked data term
exactly through its proximal map: with ``w = weight / 2`` and dual ``|y_ij| <= w``::

    y    <- project_{|y| <= w}(y + sigma grad u_bar)
    u'   <- (u + tau div y + tau m x) / (1 + tau m)
    u_bar = 2 u' - u

``tau * sigma * 8 = 1`` (``||grad||^2 <= 8``); ``tau = 0.01 / w`` (clamped to [0.05, 10]) balances
the primal (~1) and dual (~w) scales, an empirical choice that was near-optimal on phantoms.
Dropped pixels start from the mean of the kept pixels in their 5 x 5 neighbourhood. Stopping as
for TV, in image units: every 5 iterations, stop an image when ``RMS(u_k - u_{k-5}) <= 5 tol``, or at
``max_iter``. Batched over images and channels, on the input's device (the mask is drawn there
from the generator, which must live on that device); float32 (float64 for float64). On a GPU the
solver reads one number back per check, as TV's does.

**Defaults.** ``drop_prob = 0.5`` and ``weight = 0.03`` follow Guo et al.'s released defaults
(``PIXEL_DROP_RATE = 0.5``, ``TVM_WEIGHT = 0.03``); their solver's scaling of the weight is not
verified to equal this objective's, so treat 0.03 as a starting point.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medrobust.data.image_batch import check_image_batch
from medrobust.defenses.base import Defense, working_dtype
from medrobust.defenses.registry import register_defense
from medrobust.defenses.total_variation import check_tv_parameters, skimage_weight, solve_in_chunks, store_converged
from medrobust.defenses.tv_operators import (
    GRADIENT_NORM_SQUARED,
    DualBuffer,
    ImageBuffer,
    add_divergence_into,
    gradient_into,
    image_norms,
)

TVM_VOLUME_REFUSAL = ("tvm (Guo et al. 2018) reconstructs 2-D images from randomly kept pixels with a 2-D "
                      "inpainting solver whose drop rate, weight and stopping rule were set on radiographs; it is not "
                      "implemented for volumes: defend them with tv (3-D, spacing-aware), median or bits")
"""Why TVM refuses volumes (B, C, D, H, W)."""

CHECK_EVERY = 5
DEFAULT_TOL = 5e-4
"""RMS change per iteration (image units) that stops an image: 44-45 dB or more from the converged
reconstruction of the same mask on 224 px phantoms at the defaults."""
FILL_WINDOW = 5


def check_drop_prob(drop_prob: float) -> None:
    if not (math.isfinite(drop_prob) and 0.0 <= drop_prob < 1.0):
        raise ValueError(f"TVM drop_prob must be in [0, 1) (the share of pixels thrown away, e.g. 0.5), got {drop_prob}")


def pixel_mask(shape: tuple[int, ...], drop_prob: float, generator: torch.Generator | None,
               device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, H, W) mask of kept pixels (1 with probability ``1 - drop_prob``) from ``generator``."""
    b, _, h, w = shape
    draw = torch.rand((b, 1, h, w), generator=generator, device=device, dtype=torch.float32)
    return (draw >= drop_prob).to(dtype)


def _initial_fill(masked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Kept pixels as they are; dropped ones the mean of kept pixels in their 5 x 5 window (the
    image's kept mean where the window has none, 0.5 where the image has none)."""
    pad = FILL_WINDOW // 2
    channels = masked.shape[1]
    kernel_sum = lambda t: F.avg_pool2d(t, FILL_WINDOW, stride=1, padding=pad, count_include_pad=True)  # noqa: E731
    total, count = kernel_sum(masked), kernel_sum(mask)
    kept = mask.sum(dim=(2, 3), keepdim=True)
    image_mean = torch.where(kept > 0, masked.sum(dim=(2, 3), keepdim=True) / kept.clamp_min(1.0), 0.5)
    local = torch.where(count > 0, total / count.clamp_min(torch.finfo(count.dtype).tiny), image_mean)
    return torch.where(mask.expand(-1, channels, -1, -1) > 0, masked, local)


def _masked_tv(out: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, w: float, max_iter: int, tol: float) -> None:
    """Chambolle-Pock for ``min 1/2 sum m (u - x)^2 + w TV(u)`` on a batch, in place, writing
    each image's result into ``out``; converged images leave the batch at each check."""
    tau = min(max(0.01 / w, 0.05), 10.0)
    sigma = 1.0 / (GRADIENT_NORM_SQUARED * tau)
    m = mask.expand_as(x)
    masked = x * m
    scale = 1.0 / (1.0 + tau * m)  # the proximal map of the masked data term: u' = (v + tau m x) * scale
    offset = masked * tau * scale
    u = ImageBuffer(_initial_fill(masked, mask))
    u_bar, u_ref = ImageBuffer(u.data.clone()), u.data.clone()
    u_new, magnitude = ImageBuffer(torch.empty_like(u.data)), ImageBuffer(torch.empty_like(u.data))
    y, grad = DualBuffer.zeros(x), DualBuffer.zeros(x)
    index = torch.arange(x.shape[0], device=x.device)
    limit = tol * math.sqrt(x[0].numel())  # on ||u_k - u_ref||: RMS change per iteration <= tol
    last_check = 0
    for k in range(1, max_iter + 1):
        y.data.add_(gradient_into(grad, u_bar).data, alpha=sigma)
        y.squared_magnitude_into(magnitude.data).sqrt_().mul_(1.0 / w).clamp_(min=1.0)
        y.data.div_(magnitude.spread)  # onto |y_ij| <= w
        add_divergence_into(u_new, u.data, y, tau).data.mul_(scale).add_(offset)
        torch.sub(u_new.data, u.data, out=u_bar.data).add_(u_new.data)
        u, u_new = u_new, u
        if k % CHECK_EVERY and k < max_iter:
            continue
        done = image_norms(torch.sub(u.data, u_ref, out=magnitude.data)) <= limit * (k - last_check)
        running = store_converged(out, index, done, u.data, k == max_iter, tol, "TVM")
        if running is None:
            return
        if len(running) < len(index):
            index, scale, offset = index[running], scale[running], offset[running]
            u, u_bar, y = ImageBuffer(u.data[running]), ImageBuffer(u_bar.data[running]), DualBuffer(y.data[running])
            grad = DualBuffer.zeros(u.data)
            u_new, magnitude = ImageBuffer(torch.empty_like(u.data)), ImageBuffer(torch.empty_like(u.data))
            u_ref = torch.empty_like(u.data)
        u_ref.copy_(u.data)
        last_check = k


def tvm(
    x: torch.Tensor,
    drop_prob: float = 0.5,
    weight: float = 0.03,
    max_iter: int = 100,
    tol: float = DEFAULT_TOL,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Guo et al.'s randomized TVM of a batch: drop pixels with probability ``drop_prob``, then
    ``argmin_u sum_kept (u - x)^2 + weight * TV(u)`` (module docstring). No gradients (computed
    without autograd).

    Args:
        x: the images, float in [0, 1].
        drop_prob: the share of pixels thrown away (one draw per pixel, shared by its channels),
            in [0, 1). Default 0.5 (Guo et al.'s released code).
        weight: the TV weight, scaled as the study's lambda (:func:`~medrobust.defenses.total_variation.tv_denoise`),
            a finite number >= 0; 0 returns the initial fill of the dropped pixels. Default 0.03
            (Guo et al.'s released code; treat it as a starting point).
        max_iter: the cap on primal-dual iterations, at least 1. Default 100.
        tol: the RMS change per iteration, in image units, that stops an image; >= 0. Default
            5e-4 (:data:`DEFAULT_TOL`).
        generator: the random stream of the mask, on ``x``'s device. Default None: torch's
            global generator.

    Returns:
        The reconstructed images, same shape, dtype and device as ``x``, in [0, 1].

    Shape:
        - x: (B, C, H, W) float in [0, 1].
        - Output: (B, C, H, W); the mask drawn is (B, 1, H, W).

    Raises:
        ValueError: a setting out of range.
    """
    check_drop_prob(drop_prob)
    check_tv_parameters(weight, max_iter, tol)
    check_image_batch(x, "tvm", volumes=TVM_VOLUME_REFUSAL)
    if x.numel() == 0:
        return x.clone()
    with torch.no_grad():
        f = x.detach().to(working_dtype(x)).contiguous()
        mask = pixel_mask(tuple(f.shape), drop_prob, generator, f.device, f.dtype)
        if weight == 0:
            u = _initial_fill(f * mask, mask)
        else:
            w = skimage_weight(weight)
            u = solve_in_chunks(lambda out, fc, mc: _masked_tv(out, fc, mc, w, int(max_iter), float(tol)),
                                torch.empty_like(f), f, mask)
    return u.clamp_(0.0, 1.0).to(x.dtype)


@register_defense("tvm")
class RandomizedTVM(Defense):
    """Guo et al. (2018) randomized TVM as a defense (registered as ``"tvm"``); see :func:`tvm`.

    Paper: Guo, Rana, Cisse & van der Maaten, "Countering Adversarial Images using Input
    Transformations", ICLR 2018. With a Bernoulli mask ``m`` (a pixel kept with probability
    ``1 - drop_prob``)::

        u = argmin_u  sum_ij m_ij (u_ij - x_ij)^2 + weight * TV(u)

    (the study's isotropic TV and weight scaling, :class:`TotalVariation`).

    Volumes (B, C, D, H, W) are refused with the reason (:data:`TVM_VOLUME_REFUSAL`).

    ``randomized = True``: each call draws a fresh pixel mask from the defense's generator
    (built from ``seed``), or from a generator passed to ``forward``. Not differentiable (BPDA,
    with EOT over masks).

    Args:
        drop_prob: the share of pixels thrown away, in [0, 1). Default 0.5 (Guo et al.'s
            released code).
        weight: the TV weight (the study's scaling), a finite number >= 0. Default 0.03 (Guo et
            al.'s released code).
        max_iter: the cap on iterations, at least 1. Default 100 (medrobust's solver setting).
        tol: the RMS change per iteration that stops an image, >= 0. Default 5e-4 (medrobust's
            solver setting, module docstring).
        seed: seed of the defense's own mask stream (mixed with its name). Default 0; None: a
            random seed.

    Shape:
        - x: (B, C, H, W) float in [0, 1].
        - Output: (B, C, H, W), same dtype and device, in [0, 1].

    Example:

    >>> import torch
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> defense = RandomizedTVM(seed=0)
    >>> first, second = defense(x), defense(x)
    >>> first.shape, torch.equal(first, second)  # a fresh mask on every call
    (torch.Size([2, 1, 32, 32]), False)
    >>> torch.equal(defense.manual_seed(0)(x), first)  # the same seed replays the stream
    True
    """

    name = "tvm"
    randomized = True
    differentiable = False
    volumes = TVM_VOLUME_REFUSAL

    def __init__(self, drop_prob: float = 0.5, weight: float = 0.03, max_iter: int = 100, tol: float = DEFAULT_TOL,
                 seed: int | None = 0) -> None:
        super().__init__(seed=seed)
        check_drop_prob(drop_prob)
        check_tv_parameters(weight, max_iter, tol)
        self.drop_prob = float(drop_prob)
        self.weight = float(weight)
        self.max_iter = int(max_iter)
        self.tol = float(tol)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return tvm(x, self.drop_prob, self.weight, self.max_iter, self.tol, generator)
