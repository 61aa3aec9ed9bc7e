"""The defense contract: images in, images out, and a word on how to differentiate through it.

A defense maps the one currency — float images in [0, 1] of shape (B, C, H, W), C = 1 for
radiographs (3 allowed) — to images of the same shape, dtype and device, in [0, 1]. Each is a
plain function (``jpeg``, ``tv_denoise``, ...) and an ``nn.Module`` twin subclassing
:class:`Defense` (after kornia's function/module pairs and ART's preprocessors), so it can sit
in front of a model, be composed by name (``"jpeg+tv"``) and be described in run records.

Two class attributes tell an adaptive attacker (Athalye, Carlini & Wagner 2018) what to do:

* ``differentiable``: autograd through ``forward`` gives the exact gradient. When False the
  attacker uses BPDA (backward pass differentiable approximation: identity backward), see
  :class:`~medrobust.defenses.defended.DefendedClassifier`.
* ``randomized``: each call draws fresh randomness, and the attacker averages gradients over
  draws (expectation over transformation, EOT).

Two methods tell the strongest adaptive attacker more (the portfolio of
:mod:`medrobust.evaluation.adaptive_portfolio`): :meth:`Defense.exact_variant` returns the same
defense computing exact gradients where it has them but does not compute them by default (TV's
unrolled solver), and a defense without gradients may offer ``smooth_approximation(x)``, a
differentiable function close to it (JPEG's, after Shin & Song 2017) for BPDA with a smooth
backward pass instead of the identity. Randomness comes only from a ``torch.Generator``: one
passed to ``forward``, or the defense's own, built from ``seed`` on first use per device, so the
same seed gives the same outputs on the CPU.

Device: a defense runs where its input is and returns its result there (JPEG alone goes through
the host: Pillow's codec runs on the CPU). The range check of :meth:`Defense.forward` reads the
batch's minimum and maximum back from the device; a caller that already guarantees [0, 1] (a
model behind a defense, inside an attack step) skips it with ``check_range=False``.
"""

from __future__ import annotations

import inspect
import logging
import zlib
from abc import ABC, abstractmethod

import torch
import torch.nn as nn

from medrobust.data.image_batch import check_image_batch

log = logging.getLogger(__name__)


def working_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 for everything else (half precision included)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def stream_seed(seed: int, name: str) -> int:
    """The generator seed of defense ``name`` for the user's ``seed``: the seed mixed with a hash of
    the name, so a defense seeded 0 does not replay the random numbers of an attack (or another
    defense) also seeded 0; a TVM pixel mask equal to a PGD random start would correlate the two."""
    return (int(seed) * 0x9E3779B1 + zlib.crc32(name.encode())) % (2**63)


class Defense(nn.Module, ABC):
    """Base of every defense: ``defense(x) -> x'`` with the contract of this module.

    Subclasses implement :meth:`transform` (``x`` already checked; ``generator`` set when the
    defense is ``randomized``). Constructor arguments are stored as attributes of the same name,
    which :meth:`describe` reads back for run records.

    The contract follows ART's preprocessors (Nicolae et al., "Adversarial Robustness Toolbox
    v1.0.0", arXiv 2018) and kornia's function/module pairs: ``D: [0, 1]^(B, C, H, W) -> [0,
    1]^(B, C, H, W)``, with ``differentiable`` (autograd through ``D`` is exact; otherwise BPDA,
    Athalye, Carlini & Wagner, ICML 2018) and ``randomized`` (EOT over draws).

    Volumes (B, C, D, H, W) are taken as images are, unless the class says why not in
    :attr:`volumes` (a sentence: JPEG, TVM), which :meth:`forward` then gives as the refusal.

    Args:
        seed: seed of the defense's own random stream (:meth:`generator_for`), mixed with its
            name. Default None: a random seed (the registered randomized defenses default to 0).
            Deterministic defenses ignore it.

    Shape:
        - x: (B, C, H, W) float in [0, 1], or volumes (B, C, D, H, W).
        - Output: ``x``'s shape, dtype and device, in [0, 1].

    Example (a defense of one's own, buildable into compositions like the built-in ones):

    >>> import torch
    >>> class Darken(Defense):
    ...     differentiable = True
    ...     def __init__(self, factor: float = 0.5) -> None:
    ...         super().__init__()
    ...         self.factor = factor
    ...     def transform(self, x, generator):
    ...         return x * self.factor
    >>> darken = Darken(0.25)
    >>> darken(torch.ones(2, 1, 4, 4)).unique().tolist(), darken.spec()
    ([0.25], 'defense:factor=0.25')
    """

    name: str = "defense"
    randomized: bool = False
    differentiable: bool = False
    volumes: bool | str = True
    """True: the defense takes volumes (B, C, D, H, W); a sentence: why it refuses them."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

    # --- randomness ---------------------------------------------------------------------------
    def generator_for(self, device: torch.device | str) -> torch.Generator:
        """This defense's generator on ``device``, built on first use from ``seed`` mixed with the
        defense's name (:func:`stream_seed`; a random seed when ``seed`` is None). Successive calls
        continue the same stream: each forward pass draws fresh randomness.

        Args:
            device: where the images are (``"cpu"``, ``"cuda:0"``, a ``torch.device``).

        Returns:
            The generator kept for that device.
        """
        device = torch.device(device)
        key = str(device)
        if key not in self._generators:
            generator = torch.Generator(device=device)
            if self.seed is None:
                generator.seed()
            else:
                generator.manual_seed(stream_seed(int(self.seed), self.name))
            self._generators[key] = generator
        return self._generators[key]

    def manual_seed(self, seed: int | None) -> "Defense":
        """Restart the random stream from ``seed`` (all devices).

        Args:
            seed: the new seed; None draws a random one.

        Returns:
            ``self``, so ``defense.manual_seed(0)(x)`` replays the stream.
        """
        self.seed = seed
        self._generators.clear()
        return self

    # --- the transform ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                check_range: bool = True) -> torch.Tensor:
        """Apply the defense to a batch.

        Args:
            x: the images, float in [0, 1].
            generator: overrides the defense's own randomness (randomized defenses only); it
                must live on ``x``'s device. Default None: :meth:`generator_for` ``x``'s device.
            check_range: check that ``x`` lies in [0, 1] (a read from the device). Default True;
                False for callers that guarantee it. The shape and dtype are always checked.

        Returns:
            The defended images, same shape, dtype and device as ``x``, in [0, 1] (an empty
            batch comes back as a copy).

        Shape:
            - x: (B, C, H, W) float in [0, 1].
            - Output: (B, C, H, W).

        Raises:
            ImageBatchError: ``x`` is not a float image batch (B, C, H, W) (in [0, 1] when
                ``check_range``).
        """
        check_image_batch(x, f"defense {self.name!r}", unit_range=check_range, volumes=self.volumes)
        if x.numel() == 0:
            return x.clone()
        if self.randomized and generator is None:
            generator = self.generator_for(x.device)
        return self.transform(x, generator)

    @abstractmethod
    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The defense proper, on a checked, non-empty batch (every defense implements it).

        Args:
            x: (B, C, H, W) float images in [0, 1], B >= 1.
            generator: the random stream (set when the defense is ``randomized``, else None).

        Returns:
            (B, C, H, W) defended images, ``x``'s dtype and device, in [0, 1].
        """

    def exact_variant(self) -> "Defense | None":
        """The same defense (same outputs) with exact gradients through autograd, or None when it
        has none (a codec, a rounding, a random mask: BPDA is the attacker's tool there). The
        default: ``self`` when ``differentiable``; TV overrides it with its unrolled solver."""
        return self if self.differentiable else None

    # --- records ------------------------------------------------------------------------------
    def parameters_dict(self) -> dict[str, object]:
        """The constructor arguments, read back from the attributes of the same name.

        Returns:
            ``{parameter: value}`` in signature order (e.g. ``{"quality": 75, "workers": 1}``).
        """
        out: dict[str, object] = {}
        for pname, p in inspect.signature(type(self).__init__).parameters.items():
            if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if hasattr(self, pname):
                out[pname] = getattr(self, pname)
        return out

    def describe(self) -> dict[str, object]:
        """Name, flags and settings, for run records and reports.

        Returns:
            ``{"name", "randomized", "differentiable", parameter: value, ...}``.
        """
        return {"name": self.name, "randomized": self.randomized, "differentiable": self.differentiable,
                **self.parameters_dict()}

    def spec(self) -> str:
        """The registry spec that rebuilds this defense.

        Returns:
            ``name:key=value,...`` (e.g. ``"jpeg:quality=50,workers=1"``), or the bare name when
            it has no parameters; :func:`~medrobust.defenses.registry.build_defense` takes it.
        """
        params = ",".join(f"{k}={v}" for k, v in self.parameters_dict().items())
        return f"{self.name}:{params}" if params else self.name

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.parameters_dict().items())
