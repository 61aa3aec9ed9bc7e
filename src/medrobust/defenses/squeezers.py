"""Feature squeezers (Xu, Evans & Qi, NDSS 2018, "Feature Squeezing: Detecting Adversarial
Examples in Deep Neural Networks"): bit-depth reduction and median smoothing.

* ``bit_depth(x, bits)``: ``round(x * (2^bits - 1)) / (2^bits - 1)``, i.e. ``2^bits`` grey levels
  (halves round to even, like numpy's ``rint`` that Xu et al. used). Piecewise constant, so its
  gradient is zero almost everywhere: ``differentiable = False`` (BPDA).
* ``median_filter(x, size)``: the median of each ``size x size`` window, per channel, vectorised
  with ``Tensor.unfold``. It follows ``scipy.ndimage.median_filter(x, size, mode="reflect")``,
  which Xu et al. used, exactly: the window of pixel (i, j) covers rows ``i - size//2 ..
  i - size//2 + size - 1`` (and the same for columns), so for the even size 2 it is the pixel with
  its upper, left and upper-left neighbours; the median of the ``n = size^2`` values is the
  element of rank ``n // 2`` (0-based) of the sorted window, i.e. the upper of the two middle values
  when ``n`` is even (no averaging); the border is padded by half-sample symmetric reflection
  (``d c b a | a b c d | d c b a``: scipy's "reflect", numpy's "symmetric"). Autograd routes
  the gradient to the selected pixel: exact almost everywhere (``differentiable = True``).
"""

from __future__ import annotations

import torch

from medrobust.data.image_batch import check_image_batch
from medrobust.defenses.base import Defense
from medrobust.defenses.registry import register_defense

MAX_BITS = 16
MAX_MEDIAN_SIZE = 15


def check_bits(bits: int) -> None:
    if isinstance(bits, bool) or int(bits) != bits or not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"bit depth must be an integer from 1 to {MAX_BITS} (Xu et al. used 1-5), got {bits!r}")


def check_median_size(size: int) -> None:
    if isinstance(size, bool) or int(size) != size or not 1 <= int(size) <= MAX_MEDIAN_SIZE:
        raise ValueError(f"median filter size must be an integer from 1 to {MAX_MEDIAN_SIZE} (Xu et al. used 2 or 3), "
                         f"got {size!r}")


def bit_depth(x: torch.Tensor, bits: int = 5) -> torch.Tensor:
    """Reduce images in [0, 1] to ``2^bits`` levels: ``round(x * (2^bits - 1)) / (2^bits - 1)``
    (halves round to even), clamped to [0, 1].

    Args:
        x: the images, float in [0, 1] (any shape; not checked here).
        bits: the bit depth, an integer from 1 to 16. Default 5 (Xu et al.'s choice for
            CIFAR-10 and ImageNet).

    Returns:
        The squeezed images, same shape, dtype and device as ``x``, on the grid
        ``k / (2^bits - 1)``.

    Shape:
        - x: (B, C, H, W) float in [0, 1] (or volumes (B, C, D, H, W)).
        - Output: ``x``'s shape.

    Raises:
        ValueError: ``bits`` is not an integer from 1 to 16.
    """
    check_bits(bits)
    levels = float(2 ** int(bits) - 1)
    return (torch.round(x * levels) / levels).clamp(0.0, 1.0)


def _symmetric_pad(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Pad dimension ``dim`` by half-sample symmetric reflection (the edge value repeated)."""
    n = x.shape[dim]
    if before > n or after > n:
        raise ValueError(f"median filter window is larger than the image ({n} pixels along dimension {dim}); "
                         "use a smaller size")
    parts = []
    if before:
        parts.append(x.narrow(dim, 0, before).flip(dim))
    parts.append(x)
    if after:
        parts.append(x.narrow(dim, n - after, after).flip(dim))
    return torch.cat(parts, dim=dim) if len(parts) > 1 else x


def median_filter(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """``size x size`` median filter of a batch, channel by channel, with scipy's window
    placement, rank and "reflect" border (see the module docstring).

    Args:
        x: the images, float (values not checked).
        size: the window's side, an integer from 1 (a copy) to 15, at most the image's side.
            Default 2 (Xu et al.'s 2 x 2 for CIFAR-10 and ImageNet).

    Returns:
        The filtered images, same shape, dtype and device as ``x``; differentiable (autograd
        routes the gradient to the selected pixel).

    Volumes (B, C, D, H, W) are filtered with a ``size x size x size`` cube, as
    ``scipy.ndimage.median_filter`` filters a 3-D array (rank ``size^3 // 2``).

    Shape:
        - x: (B, C, H, W), or volumes (B, C, D, H, W).
        - Output: ``x``'s shape.

    Raises:
        ValueError: ``size`` is out of range or larger than the image.
    """
    check_median_size(size)
    check_image_batch(x, "median_filter")
    size = int(size)
    if size == 1:
        return x.clone()
    before, after = size // 2, size - 1 - size // 2
    spatial = range(2, x.ndim)  # (H, W), or a volume's (D, H, W)
    padded = x
    for dim in spatial:
        padded = _symmetric_pad(padded, before, after, dim)
    windows = padded
    for dim in spatial:
        windows = windows.unfold(dim, size, 1)  # (B, C, H, W, size, size) (volumes: size^3), a view
    n = size ** len(spatial)
    flat = windows.reshape(*x.shape, n)
    return flat.kthvalue(n // 2 + 1, dim=-1).values


@register_defense("bits")
class BitDepth(Defense):
    """Bit-depth reduction (Xu et al. 2018) as a defense (registered as ``"bits"``).

    Paper: Xu, Evans & Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
    Networks", NDSS 2018::

        x' = round(x * (2^bits - 1)) / (2^bits - 1)

    Not differentiable (zero gradient almost everywhere): adaptive attacks use BPDA.

    Args:
        bits: the bit depth, an integer from 1 to 16. Default 5 (the paper's choice for
            CIFAR-10 and ImageNet).

    Shape:
        - x: (B, C, H, W) float in [0, 1].
        - Output: (B, C, H, W), same dtype and device, on the grid ``k / (2^bits - 1)``.

    Example:

    >>> import torch
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> BitDepth(bits=1)(x).unique().tolist()
    [0.0, 1.0]
    >>> len(BitDepth()(x).unique()) <= 2 ** 5
    True
    """

    name = "bits"
    differentiable = False

    def __init__(self, bits: int = 5) -> None:
        super().__init__()
        check_bits(bits)
        self.bits = int(bits)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return bit_depth(x, self.bits)


@register_defense("median")
class MedianFilter(Defense):
    """Median smoothing (Xu et al. 2018) as a defense (registered as ``"median"``).

    Paper: Xu, Evans & Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
    Networks", NDSS 2018: each pixel replaced by the median of its ``size x size`` window (per
    channel; window placement, rank and "reflect" border as ``scipy.ndimage.median_filter``).

    Differentiable (autograd routes the gradient to the selected pixel).

    Args:
        size: the window's side, an integer from 1 to 15, at most the image's side. Default 2
            (the paper's 2 x 2 for CIFAR-10 and ImageNet).

    Shape:
        - x: (B, C, H, W) float in [0, 1].
        - Output: (B, C, H, W), same dtype and device, in [0, 1].

    Example (an isolated bright pixel is removed):

    >>> import torch
    >>> spot = torch.zeros(1, 1, 8, 8)
    >>> spot[0, 0, 4, 4] = 1.0
    >>> MedianFilter(size=3)(spot).max().item()
    0.0
    >>> torch.equal(MedianFilter(size=3)(spot), median_filter(spot, size=3))
    True
    """

    name = "median"
    differentiable = True

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        check_median_size(size)
        self.size = int(size)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return median_filter(x, self.size)
