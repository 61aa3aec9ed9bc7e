"""The names a model's contract accepts for its intensity convention and its output kind, read
without torch, so that the service's web process can refuse a misspelt name before a job is
queued. :class:`medrobust.models.intensity.Intensity` and
:class:`medrobust.models.output_kind.OutputKind` parse through these functions (a test checks
that their members are exactly these names).
"""

from __future__ import annotations

INTENSITY_NAMES = ("unit", "imagenet", "symmetric", "byte")
"""[0, 1] as stored; (x - mean) / std with ImageNet statistics; [-1, 1]; [0, 255]."""
INTENSITY_ALIASES = {"none": "unit", "[0,1]": "unit", "[-1,1]": "symmetric", "[0,255]": "byte"}
INTENSITY_MEANINGS = {
    "unit": "the pixels in [0, 1] as stored (x / 255 of an 8-bit image)",
    "imagenet": "(x - mean) / std with ImageNet's mean and std",
    "symmetric": "[-1, 1] (2x - 1)",
    "byte": "[0, 255] (255x)",
}
"""What each intensity convention hands the network, for images x in [0, 1]."""

OUTPUT_KIND_NAMES = ("softmax", "binary", "multilabel")
"""One logit per class (softmax); one logit for the positive class; one sigmoid per finding."""


def intensity_name(value: str) -> str:
    """The convention ``value`` names (``"[-1, 1]"`` -> ``"symmetric"``); ValueError listing the names."""
    key = INTENSITY_ALIASES.get(value.replace(" ", "").lower(), value.lower())
    if key not in INTENSITY_NAMES:
        raise ValueError(f"unknown intensity convention {value!r}; use one of unit (none), imagenet, "
                         "symmetric ([-1,1]), byte ([0,255])")
    return key


def intensity_required(subject: str, how: str = "--intensity, model.load.intensity, or intensity= in Python") -> str:
    """The sentence refusing ``subject`` (a model file) loaded without its intensity convention.

    Only a medrobust checkpoint records how its network expects its input scaled; for any other
    file (Keras, ONNX, TorchScript, a state dict) a guess of [0, 1] would silently feed a
    network trained on ImageNet-normalised or [-1, 1] inputs images it has never seen, and
    every figure after that would be the wrong model's. So the user states it; ``how`` says where
    (the command-line option, the configuration's field, the Python argument; the service's form
    field)."""
    choices = "; ".join(f"{name}: {meaning}" for name, meaning in INTENSITY_MEANINGS.items())
    return (f"{subject}: the file does not record how the model expects its input scaled, so give the intensity "
            f"convention its training used ({how}) - {choices}")


def output_kind_name(value: str) -> str:
    """``value`` when it is an output kind; ValueError listing them."""
    if value not in OUTPUT_KIND_NAMES:
        raise ValueError(f"unknown output kind {value!r}; use one of {', '.join(OUTPUT_KIND_NAMES)}")
    return value
