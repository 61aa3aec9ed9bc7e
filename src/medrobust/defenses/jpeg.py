"""JPEG compression as a defense: ``I_jpeg = Decode(Encode(I, q))``, the first stage of the
study's hybrid defense (Dziugaite et al. 2016; Das et al. 2017; Guo et al. 2018).

A real JPEG round trip through Pillow (libjpeg), as a PACS or a browser would do it: each image
is rounded (not truncated) to 8 bits, ``round(255 x)``, encoded at ``quality`` (Pillow's standard
IJG quantisation tables scaled by quality, baseline, 4:2:0 chroma subsampling for colour) and
decoded; the result is ``decoded / 255``. One channel is encoded as a grayscale ("L") JPEG,
three channels as "RGB". Pillow works one image at a time, so this loops over the batch
(``benchmarks/bench_defenses.py`` measures its rate; figures in ``benchmarks/README.md``);
``workers > 1`` spreads the images over threads (libjpeg runs without the GIL).

**JPEG runs on the CPU**, whatever the input's device: there is no GPU JPEG codec here. A batch on
a GPU is rounded to 8 bits there, copied to the host as ``uint8`` (a quarter of the float
bytes), coded by Pillow, and the decoded ``uint8`` batch is copied back and scaled on the input's
device, where the result is returned. Each call therefore waits for the device once; inside an
attack against a defended model that is once per step.

Not differentiable (the codec lives outside autograd): an adaptive attacker uses BPDA.

**Volumes are refused** (:data:`JPEG_VOLUME_REFUSAL`), not coded slice by slice: JPEG stores 8-bit
2-D images, so on CT it would round 4096 HU levels to 256 (16 HU steps, four times a brain
window's budget of 4 HU) and code each slice's 8 x 8 blocks alone, a change no scanner or PACS
makes to a CT series (they store it losslessly, or in 12/16-bit JPEG 2000 / JPEG-LS). A
defense that rewrites the data's own grid is not a defense of that data.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from medrobust.data.image_batch import check_image_batch
from medrobust.defenses.base import Defense
from medrobust.defenses.jpeg_quality import JPEG_VOLUME_REFUSAL, check_quality
from medrobust.defenses.registry import register_defense


def _round_trip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Encode one uint8 (H, W) or (H, W, 3) array as JPEG and decode it."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        mode = "L" if pixels.ndim == 2 else "RGB"
        return np.asarray(decoded if decoded.mode == mode else decoded.convert(mode))


def jpeg(x: torch.Tensor, quality: int = 75, workers: int = 1) -> torch.Tensor:
    """JPEG round trip of a batch: ``Decode(Encode(round(255 x), quality)) / 255`` per image.

    The codec runs on the CPU (Pillow): a batch on a GPU goes to the host as ``uint8`` and back.
    Not differentiable (computed without autograd).

    Args:
        x: the images, float in [0, 1]; one channel is coded as a grayscale JPEG, three as RGB
            (4:2:0 chroma).
        quality: the JPEG quality, an integer from 1 to 95 (Pillow's useful range: above 95 it
            disables parts of the compression). Default 75 (Pillow's; the study used 50-80).
        workers: threads sharing the batch; 1 (or less) codes the images one after another in
            this thread. The result does not depend on it. Default 1.

    Returns:
        The decoded images, same shape, dtype and device as ``x``, on the 8-bit grid ``k / 255``.

    Shape:
        - x: (B, 1, H, W) or (B, 3, H, W) float in [0, 1].
        - Output: the same shape.

    Raises:
        ValueError: ``quality`` is out of range, or ``x`` has neither 1 nor 3 channels.
    """
    check_quality(quality)
    check_image_batch(x, "jpeg", volumes=JPEG_VOLUME_REFUSAL)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg expects images of shape (B, 1, H, W) or (B, 3, H, W), got {tuple(x.shape)}; "
                         "JPEG stores one (grayscale) or three (RGB) channels")
    if x.numel() == 0:
        return x.clone()
    with torch.no_grad():
        levels = (x.detach().float() * 255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
        channels_last = levels[:, 0] if x.shape[1] == 1 else levels.permute(0, 2, 3, 1)
        pixels = channels_last.contiguous().cpu().numpy()
        out = np.empty_like(pixels)

        def one(i: int) -> None:
            out[i] = _round_trip(pixels[i], int(quality))

        if workers > 1 and len(pixels) > 1:
            with ThreadPoolExecutor(max_workers=min(int(workers), len(pixels))) as pool:
                list(pool.map(one, range(len(pixels))))
        else:
            for i in range(len(pixels)):
                one(i)
        decoded = torch.from_numpy(out).to(device=x.device)
        decoded = decoded.unsqueeze(1) if x.shape[1] == 1 else decoded.permute(0, 3, 1, 2)
        return (decoded.to(torch.float32) / 255.0).to(x.dtype).contiguous()


@register_defense("jpeg")
class JPEG(Defense):
    """JPEG compression as a defense (registered as ``"jpeg"``); see :func:`jpeg`.

    Papers: Dziugaite, Ghahramani & Roy, "A study of the effect of JPG compression on
    adversarial images", arXiv 2016; Das et al., "Keeping the Bad Guys Out: Protecting and
    Vaccinating Deep Learning with JPEG Compression", arXiv 2017; Guo, Rana, Cisse & van der
    Maaten, "Countering Adversarial Images using Input Transformations", ICLR 2018; the first
    stage of the study's hybrid defense::

        I_jpeg = Decode(Encode(round(255 x), quality)) / 255

    Not differentiable: adaptive attacks use BPDA through it (or, with ``gradient="smooth"``,
    :meth:`smooth_approximation`). Runs on the CPU (Pillow) and returns on the input's device.

    Args:
        quality: the JPEG quality, an integer from 1 to 95. Default 75 (Pillow's default; the
            study used 50-80, e.g. 50).
        workers: threads sharing the batch, at least 1 (does not change the result). Default 1.

    Shape:
        - x: (B, 1, H, W) (grayscale JPEG) or (B, 3, H, W) (RGB) float in [0, 1].
        - Output: the same shape, dtype and device, on the 8-bit grid ``k / 255``.

    Example:

    >>> import torch
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> out = JPEG(quality=50)(x)
    >>> out.shape, out.dtype, torch.equal(out, (out * 255).round() / 255)
    (torch.Size([2, 1, 32, 32]), torch.float32, True)
    >>> torch.equal(out, jpeg(x, quality=50))  # the module and its function agree
    True
    """

    name = "jpeg"
    volumes = JPEG_VOLUME_REFUSAL
    differentiable = False

    def __init__(self, quality: int = 75, workers: int = 1) -> None:
        super().__init__()
        check_quality(quality)
        if int(workers) < 1:
            raise ValueError(f"JPEG workers must be at least 1, got {workers}")
        self.quality = int(quality)
        self.workers = int(workers)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return jpeg(x, self.quality, self.workers)

    def smooth_approximation(self, x: torch.Tensor) -> torch.Tensor:
        """A differentiable approximation of this JPEG round trip, for BPDA's backward pass:
        :func:`~medrobust.defenses.jpeg_smooth.smooth_jpeg` at ``self.quality`` (Shin & Song 2017).

        Args:
            x: (B, 1, H, W) or (B, 3, H, W) float images in [0, 1].

        Returns:
            The same shape, dtype and device, in [0, 1], differentiable with respect to ``x``.
        """
        from medrobust.defenses.jpeg_smooth import smooth_jpeg  # on use: its tables cost a moment to build

        return smooth_jpeg(x, self.quality)
