"""The Classifier: a network plus its input contract.

Every model medrobust touches — the study's DenseNet121, a zoo surrogate, a user's
TorchScript, Keras or ONNX file — is a :class:`Classifier`. It takes the one currency
(float images in [0, 1], shape (B, C_stored, H, W), C_stored = 1 for radiographs; or volumes
(B, C_stored, D, H, W) for a volume model, ``spatial_dims = 3``) and
returns logits, doing inside ``forward`` everything its network needs: resizing to its input
size (bilinear for images, trilinear for volumes), repeating the grey channel to three, scaling
to its intensity convention, channels-last layout. So attacks perturb the stored image and an epsilon of 8/255 is 8 grey levels,
whatever the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from medrobust.data.image_batch import ImageBatchError, check_image_batch
from medrobust.data.image_size import check_input_size
from medrobust.models.batched_prediction import batched_logits
from medrobust.models.intensity import AnyIntensity, Intensity, network_channels_of, parse_intensity
from medrobust.models.output_kind import OutputKind


class NotDifferentiableError(RuntimeError):
    """A white-box (gradient) method was asked of a black-box model."""


_NETWORK_MEMORY_FORMAT: ContextVar[torch.memory_format | None] = ContextVar("medrobust_network_memory_format",
                                                                            default=None)


@contextmanager
def network_memory_format(memory_format: torch.memory_format | None) -> Iterator[None]:
    """Inside the block, every :class:`Classifier` hands its network 4-D inputs in ``memory_format``
    (e.g. ``torch.channels_last``; None: as computed, the default). Only the layout of the input
    tensor changes, never its values, and no module is touched: convolutions given a channels-last
    input produce channels-last outputs, so the whole network runs in that layout while its
    parameters stay as they are. The attack engine uses it on the CPU, where oneDNN's channels-last
    kernels are faster (:mod:`medrobust.attacks.gradient_pass`). A context variable, so another
    thread or task using the same model is not affected.

    >>> import torch
    >>> net = torch.nn.Conv2d(3, 2, 3)
    >>> model = Classifier(net, InputContract(("a", "b"))).eval()
    >>> with network_memory_format(torch.channels_last):
    ...     model.prepare(torch.rand(2, 1, 8, 8)).is_contiguous(memory_format=torch.channels_last)
    True
    >>> model.prepare(torch.rand(2, 1, 8, 8)).is_contiguous()
    True
    """
    token = _NETWORK_MEMORY_FORMAT.set(memory_format)
    try:
        yield
    finally:
        _NETWORK_MEMORY_FORMAT.reset(token)


@dataclass(frozen=True)
class InputContract:
    """What a network expects and what it returns: the *resolved* contract a Classifier carries.

    Every value here is settled (sizes as (H, W), channels, the intensity and output kind as
    enums), whether it came from a checkpoint's model.json, a model file's own input shape or a
    default. What a user *declares* about a model file is a
    :class:`~medrobust.models.contract.ModelContract` (values left out where the file or a
    default decides); the loader, through :meth:`ModelContract.resolve
    <medrobust.models.contract.ModelContract.resolve>`, turns that declaration into this.

    The defaults are what ImageNet-pretrained networks such as the study's DenseNet121 expect of
    a radiograph: any input size, 1 stored channel, 3 network channels with ImageNet intensity,
    softmax outputs, channels first, threshold 0.5.

    Args:
        classes: the class names in the model's output order (at least one; a list is stored as
            a tuple).
        input_size: the size (H, W) the network was trained at, or one int for a square; a
            volume model's (D, H, W). Default None: any size. Each side at least 1 pixel and
            H x W within the readers' pixel limit
            (:func:`~medrobust.data.image_size.check_input_size`).
        stored_channels: the channels of the images medrobust feeds, 1 (radiographs, the
            default) or 3.
        network_channels: what the network's first layer takes, 1 or 3 (default 3): 1 -> 3 is a
            repeat, 3 -> 1 a luminance average. With CT windows: one per window (the windows make
            the channels; the stored image has 1).
        intensity: how [0, 1] images are scaled for the network, an
            :class:`~medrobust.models.intensity.Intensity` or its name (``"imagenet"`` mean/std,
            the default; ``"unit"`` unchanged; ``"symmetric"``; ``"byte"``), CT windows
            (:class:`~medrobust.models.intensity.HUWindows`, ``"hu_windows:40,80;80,200"``) or
            percentile normalisation (``"percentile:1,99"``); any form
            :func:`~medrobust.models.intensity.parse_intensity` reads.
        output_kind: ``"softmax"`` (K logits, the default), ``"binary"`` (one logit, two class
            names) or ``"multilabel"`` (K independent findings), or the
            :class:`~medrobust.models.output_kind.OutputKind`.
        channels_last: the network takes (B, H, W, C) (Keras). Default False.
        threshold: the sigmoid decision threshold of binary and multilabel models. Default 0.5.
        spatial_dims: 2 for images (B, C, H, W), 3 for volumes (B, C, D, H, W). Default None:
            3 when ``input_size`` has three sides, else 2. Stored in model.json only for volumes.

    Raises:
        ValueError: an input size that is no image size, channels other than 1 or 3, a binary
            model without exactly two class names, no class name, an unknown intensity or
            output kind, or ``spatial_dims`` that is not 2 or 3 or disagrees with ``input_size``.

    Example:

    >>> contract = InputContract(["Normal", "Pneumonia", "Pneumothorax"], input_size=224)
    >>> contract.input_size, contract.stored_channels, contract.network_channels, contract.output_kind.value
    ((224, 224), 1, 3, 'softmax')
    >>> InputContract.from_json(contract.to_json()) == contract  # as stored in model.json
    True
    >>> volume = InputContract(["normal", "haemorrhage"], input_size=[16, 64, 64], network_channels=1, intensity="unit")
    >>> volume.input_size, volume.spatial_dims, volume.to_json()["spatial_dims"]
    ((16, 64, 64), 3, 3)
    """

    classes: tuple[str, ...]
    input_size: tuple[int, int] | None = None
    stored_channels: int = 1
    network_channels: int = 3
    intensity: AnyIntensity = Intensity.IMAGENET
    output_kind: OutputKind = OutputKind.SOFTMAX
    channels_last: bool = False
    threshold: float = 0.5
    spatial_dims: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "intensity", parse_intensity(self.intensity))
        object.__setattr__(self, "output_kind", OutputKind.parse(self.output_kind))
        # A side of 0, a negative one or one past the readers' pixel limit is refused here, before any image is read.
        object.__setattr__(self, "input_size", check_input_size(self.input_size))
        sized = len(self.input_size) if self.input_size is not None else None
        dims = self.spatial_dims if self.spatial_dims is not None else (sized or 2)
        if dims not in (2, 3) or (sized is not None and sized != dims):
            raise ValueError(f"spatial_dims {self.spatial_dims}: a model takes images (2) or volumes (3), and its "
                             f"input size {self.input_size} must have as many sides; give input_size as [H, W] for "
                             "images or [D, H, W] for volumes")
        object.__setattr__(self, "spatial_dims", dims)
        if dims == 3 and self.channels_last:
            raise ValueError("channels_last is for 2-D Keras models; a volume model takes (B, C, D, H, W)")
        windows = network_channels_of(self.intensity)
        if windows is not None:
            if self.stored_channels != 1 or self.network_channels != windows:
                raise ValueError(
                    f"the intensity {self.intensity.value} reads 1 stored channel (HU) and gives the network {windows} "
                    f"channel(s), one per window, but the contract has {self.stored_channels} stored and "
                    f"{self.network_channels} network channel(s); give as many windows as the network's channels")
        elif self.stored_channels not in (1, 3) or self.network_channels not in (1, 3):
            raise ValueError(
                f"channels must be 1 or 3 (stored {self.stored_channels}, network {self.network_channels})"
            )
        if self.output_kind is OutputKind.BINARY and len(self.classes) != 2:
            raise ValueError(f"a binary model needs two class names [negative, positive], got {list(self.classes)}")
        if len(self.classes) < 1:
            raise ValueError("a classifier needs at least one class name")

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["intensity"] = self.intensity.value
        out["output_kind"] = self.output_kind.value
        out["classes"] = list(self.classes)
        out["input_size"] = list(self.input_size) if self.input_size else None
        if self.spatial_dims == 2:
            del out["spatial_dims"]  # images: model.json and run records as before volumes existed
        return out

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "InputContract":
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("input_size") is not None:
            kwargs["input_size"] = tuple(kwargs["input_size"])  # type: ignore[arg-type]
        return cls(**kwargs)  # type: ignore[arg-type]


class Classifier(nn.Module):
    """``forward(x)``: images in [0, 1] (B, C_stored, H, W) -> logits (B, K) (binary: (B, 1));
    a volume model (``contract.spatial_dims == 3``) takes volumes (B, C_stored, D, H, W).

    ``differentiable`` is True: gradients flow to the input. Black-box wrappers (ONNX) set
    it to False, and white-box attacks refuse them with a message pointing at transfer and
    query attacks.

    The forward pass applies the :class:`InputContract` inside the model, differentiably, so an
    attack's budget is in units of the stored image whatever the network::

        logits = network(layout(intensity(channels(resize(x)))))

    ``resize``: bilinear (antialiased) to ``input_size`` if set (volumes: trilinear to (D, H, W));
    ``channels``: a grey channel
    repeated to three (or three averaged to one); ``intensity``: e.g. ImageNet mean/std;
    ``layout``: channels-last for Keras (and, inside :func:`network_memory_format`, the memory
    format asked for: the same values, another layout).

    Args:
        network: the ``nn.Module`` that maps prepared inputs to logits.
        contract: what the network takes and returns (:class:`InputContract`).
        arch: the zoo architecture's name; None (the default) for foreign models, which cannot
            be saved as a medrobust checkpoint.
        metadata: kept with checkpoints (weights, source file, format...). Default: empty.

    Shape:
        - x: (B, C_stored, H, W) float in [0, 1] (C_stored = ``contract.stored_channels``);
          (B, C_stored, D, H, W) for a volume model.
        - :meth:`forward`, :meth:`logits`: (B, K) logits (binary: (B, 1)).
        - :meth:`predict_proba`: (B, K) probabilities (binary: (B, 2)), on the CPU.
        - :meth:`predict`: (B,) class indices ((B, K) 0/1 for multilabel), on the CPU.

    Example (any network behind a contract: 32 px grey images in, an 8 px one-channel net):

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 8, 2))
    >>> contract = InputContract(("Normal", "Pneumonia"), input_size=8, network_channels=1, intensity="unit")
    >>> model = Classifier(net, contract).eval()
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> model(x).shape, model.classes, model.input_channels, model.input_size
    (torch.Size([2, 2]), ['Normal', 'Pneumonia'], 1, (8, 8))
    >>> p = model.predict_proba(x)
    >>> p.shape, bool(torch.allclose(p.sum(dim=1), torch.ones(2))), model.predict(x).shape
    (torch.Size([2, 2]), True, torch.Size([2]))
    """

    differentiable: bool = True

    def __init__(self, network: nn.Module, contract: InputContract, arch: str | None = None,
                 metadata: dict[str, object] | None = None) -> None:
        super().__init__()
        self.network = network
        self.contract = contract
        self.arch = arch
        self.metadata: dict[str, object] = dict(metadata or {})

    # --- the contract, as attributes
    @property
    def classes(self) -> list[str]:
        return list(self.contract.classes)

    @property
    def input_channels(self) -> int:
        return self.contract.stored_channels

    @property
    def input_size(self) -> tuple[int, ...] | None:
        """(H, W), a volume model's (D, H, W), or None (any size)."""
        return self.contract.input_size

    @property
    def spatial_dims(self) -> int:
        """2 for an image model (B, C, H, W), 3 for a volume model (B, C, D, H, W)."""
        return int(self.contract.spatial_dims or 2)

    @property
    def output_kind(self) -> OutputKind:
        return self.contract.output_kind

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    # --- forward
    def check_input(self, x: torch.Tensor) -> None:
        """Refuse anything but float images (B, C_stored, H, W), or volumes (B, C_stored, D, H, W) for
        a volume model (no range check: this runs every forward)."""
        who = f"model {self.arch!r}" if self.arch else "the classifier"
        if self.spatial_dims == 3:
            if x.ndim == 4:
                raise ImageBatchError(f"{who}: is a volume model and takes volumes (B, {self.contract.stored_channels}, "
                                      f"D, H, W), got images of shape {tuple(x.shape)}; give it whole volumes")
            check_image_batch(x, who, channels=self.contract.stored_channels)
        else:
            check_image_batch(x, who, channels=self.contract.stored_channels,
                              volumes="it is an image model (B, C, H, W); give it slices, or load a volume model "
                                      "(input_size [D, H, W])")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Map stored images in [0, 1] to what the network takes (differentiable)."""
        self.check_input(x)
        c = self.contract
        if c.input_size is not None and tuple(x.shape[2:]) != c.input_size:
            if x.ndim == 5:  # torch has no antialiased trilinear: a plain trilinear resample
                x = F.interpolate(x, size=c.input_size, mode="trilinear", align_corners=False)
            else:
                x = F.interpolate(x, size=c.input_size, mode="bilinear", align_corners=False, antialias=True)
        if network_channels_of(c.intensity) is not None:
            pass  # the CT windows make the network's channels from the stored one
        elif c.stored_channels == 1 and c.network_channels == 3:
            x = x.expand(-1, 3, *x.shape[2:])
        elif c.stored_channels == 3 and c.network_channels == 1:
            x = x.mean(dim=1, keepdim=True)
        x = c.intensity.apply(x)
        if c.channels_last:
            x = x.permute(0, 2, 3, 1)
        else:
            memory_format = _NETWORK_MEMORY_FORMAT.get()
            if memory_format is not None and x.dim() == 4:
                x = x.contiguous(memory_format=memory_format)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits on stored images, the contract applied first (:meth:`prepare`).

        Args:
            x: (B, C_stored, H, W) float images in [0, 1], on the model's device.

        Returns:
            (B, K) logits ((B, 1) binary), differentiable with respect to ``x``.
        """
        return self.network(self.prepare(x))

    # --- decisions
    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The loss of this output kind (cross-entropy, or binary cross-entropy with logits)."""
        return self.output_kind.loss(logits, target, reduction=reduction)

    def logits(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Logits for any number of images, in eval mode and batches, without gradients.

        Args:
            x: (N, C_stored, H, W) float images in [0, 1], on any device (moved batch by batch).
            batch_size: images per forward pass. Default 64.

        Returns:
            (N, K) logits ((N, 1) binary) on the CPU; an empty (0, K) tensor for no images.
        """
        if len(x) == 0:
            return torch.empty(0, 1 if self.output_kind is OutputKind.BINARY else len(self.classes))
        return batched_logits(self, x, batch_size)

    def predict_proba(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Probabilities with this output kind's rule (softmax, or per-finding sigmoids).

        Args:
            x: (N, C_stored, H, W) float images in [0, 1].
            batch_size: images per forward pass. Default 64.

        Returns:
            (N, K) probabilities on the CPU (binary: (N, 2), negative then positive).
        """
        return self.output_kind.probabilities(self.logits(x, batch_size))

    def predict(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Predicted labels with this output kind's decision rule (argmax, or the sigmoid above
        ``contract.threshold`` for binary and multi-label models).

        Args:
            x: (N, C_stored, H, W) float images in [0, 1].
            batch_size: images per forward pass. Default 64.

        Returns:
            (N,) int64 class indices ((N, K) 0/1 for multilabel) on the CPU;
            :data:`~medrobust.models.output_kind.NO_ANSWER` where the logits are not finite.
        """
        return self.output_kind.decide(self.logits(x, batch_size), self.contract.threshold)


def require_gradients(model: nn.Module, method: str) -> None:
    """Raise a clear error if ``model`` cannot give input gradients (a black box)."""
    if not getattr(model, "differentiable", True):
        raise NotDifferentiableError(
            f"{method} needs input gradients, but this model is a black box (e.g. ONNX) and gives none; "
            "use a transfer attack (craft on a differentiable surrogate with --surrogate) or a query attack "
            "such as 'square', which needs only the model's probabilities"
        )


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
