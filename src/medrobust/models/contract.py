"""The model contract a user declares: what a model file cannot say about itself.

A medrobust checkpoint records its classes and preprocessing in ``model.json``; no other format
does (a Keras, ONNX or TorchScript file, a state dict). So whoever brings such a file declares,
once, what it takes and what it answers: a :class:`ModelContract`. The same object comes from
every face -- the command line's flags (``--classes``, ``--intensity``...), the configuration's
``model.load`` section (its fields beside ``path``), ``contract=`` in Python and the service's
upload form -- and reaches one loader, :func:`medrobust.models.loading.load_classifier`, which
reads what the file does say (Keras and ONNX input shapes) and resolves the two into the
Classifier's :class:`~medrobust.models.classifier.InputContract`.

Every value is checked when the contract is built, before any file is read: names through
:mod:`medrobust.specs.contract_names`, the input size through
:func:`medrobust.data.image_size.check_input_size`. No torch here: the service's web process
builds a contract from the form without ever importing it (the zoo's architecture names, which
live in a registry that needs torch, are looked up when the model loads, or by
:meth:`~medrobust.evaluation.config.ExperimentConfig.check_components`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from medrobust.data.class_names import canonical_class_name
from medrobust.data.image_size import check_input_size, parse_input_size
from medrobust.specs.contract_names import hu_windows, intensity_name, intensity_required, output_kind_name

if TYPE_CHECKING:
    from medrobust.models.classifier import InputContract

CLASSES_EXAMPLE = "e.g. Normal,Pneumonia,Pneumothorax"


class ModelContract(BaseModel):
    """What a user declares about a model file that the file cannot say (frozen; checked when built).

    Every field is a keyword; None means not declared, and the loader then uses what the file
    says, or the default given below.

    Args:
        classes: the class names in the model's output order: a list, or one comma-separated
            string (``"Normal,Pneumonia"``); no name twice (names match case- and
            punctuation-blind, so ``No_Finding`` and ``no finding`` are one class). Stored as a
            tuple. Required for any file but a medrobust checkpoint.
        input_size: the side (``224``) or ``(height, width)`` the network was trained at (None:
            any size, or what a Keras/ONNX file declares); a square size is kept as one number,
            and text (a flag, a form field) is read as its numbers (``"224"``, ``"150,200"``,
            ``"16,64,64"``: :func:`~medrobust.data.image_size.parse_input_size`). A volume model (CT, MRI) states
            three numbers, ``[depth, height, width]`` (``[16, 64, 64]``): three sides always mean
            volumes (B, C, D, H, W), one or two always images.
        channels: the channels the network's first layer takes, 1 or 3 (also accepted as
            ``network_channels``, the InputContract's name); with CT windows, one per window
            (None: as many as the windows). None: what a Keras/ONNX file
            declares, the zoo architecture's for a state dict, else 3 (a TorchScript network
            that fails on 3 and runs on 1 is read as grey).
        intensity: how the network's training scaled its input: ``unit`` ([0, 1]), ``imagenet``
            (ImageNet mean/std), ``symmetric`` ([-1, 1]) or ``byte`` ([0, 255]); aliases such as
            ``none`` or ``[-1,1]`` are stored as these names. CT windows in HU, one network
            channel per window: ``{"hu_windows": [[40, 80], [80, 200]]}`` or the text
            ``hu_windows:40,80;80,200``; per-image percentile normalisation (MRI-like data):
            ``{"normalize": "percentile", "low": 1, "high": 99}`` or ``percentile:1,99``. Stored as
            the canonical text (:func:`~medrobust.specs.contract_names.intensity_name`, the one
            parser of every face). Required for any file but a medrobust checkpoint: a guess would
            silently evaluate another model.
        output_kind: ``softmax`` (K logits; what None resolves to), ``binary`` (one logit; two
            class names, negative first) or ``multilabel`` (K independent findings).
        arch: the zoo architecture of a state dict (``small-cnn``, ``densenet121``...); looked
            up when the model loads.
        trust_pickle: allow unpickling a whole ``nn.Module``, which runs the file's code.
            Default False.
        outputs: Keras and ONNX only: ``logits`` or ``probabilities``, to override the
            detection of a final softmax/sigmoid (None or ``auto``: detected).
        channels_last: the network takes (B, H, W, C) (None: True for Keras, else False).

    Raises:
        pydantic.ValidationError: a value is refused (a ValueError; :meth:`from_options` turns it
            into one line naming each refused value), or a field is not part of the contract.

    This is the *declared* contract. A loaded Classifier carries the *resolved* one, an
    :class:`~medrobust.models.classifier.InputContract` (sizes as (H, W) pairs, every default
    filled in, the file's own shape read): :meth:`resolve` turns one into the other.

    Example:

    >>> contract = ModelContract(classes="Normal, Pneumonia", input_size=224, intensity="[-1,1]")
    >>> contract.classes, contract.input_size, contract.intensity, contract.output_kind
    (('Normal', 'Pneumonia'), 224, 'symmetric', None)
    >>> contract.declared()  # what the configuration's model.load section holds beside path
    {'classes': ['Normal', 'Pneumonia'], 'input_size': 224, 'intensity': 'symmetric'}
    >>> ModelContract.model_validate(contract.declared()) == contract
    True
    >>> ModelContract.from_options({"classes": ["Normal", "normal"]}, where="model.onnx")
    Traceback (most recent call last):
    ...
    ValueError: model.onnx: classes ['Normal', 'normal']: 'Normal' and 'normal' name one class (names match ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    classes: tuple[str, ...] | None = None
    input_size: int | tuple[int, int] | tuple[int, int, int] | None = None
    intensity: str | None = None  # before channels: CT windows decide how many channels the network takes
    channels: int | None = Field(None, validation_alias=AliasChoices("channels", "network_channels"))
    output_kind: str | None = None
    arch: str | None = None
    trust_pickle: bool = False
    outputs: Literal["logits", "probabilities"] | None = None
    channels_last: bool | None = None

    @field_validator("classes", mode="before")
    @classmethod
    def _class_names(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            names: list[Any] = value.split(",") if value.strip() else []
        elif isinstance(value, list | tuple):
            names = list(value)
        else:
            raise ValueError(f"classes {value!r}: give the model's class names in its output order, as a list or "
                             f"comma-separated ({CLASSES_EXAMPLE})")
        if not names:
            return None
        if not all(isinstance(n, str) for n in names):
            raise ValueError(f"classes {names!r}: every class name must be text ({CLASSES_EXAMPLE})")
        names = [n.strip() for n in names]
        seen: dict[str, str] = {}
        for name in names:
            key = canonical_class_name(name)
            if not key:
                raise ValueError(f"classes {names!r}: {name!r} has no letters or digits; give every class a name, in "
                                 f"the model's output order ({CLASSES_EXAMPLE})")
            if key in seen:
                raise ValueError(f"classes {names!r}: {seen[key]!r} and {name!r} name one class (names match case- "
                                 "and punctuation-blind); give each class once, in the model's output order")
            seen[key] = name
        return tuple(names)

    @field_validator("input_size", mode="before")
    @classmethod
    def _image_size(cls, value: Any) -> Any:
        # text (a flag, a form field, an environment variable): 224, 150,200 or a volume's 8,32,32
        # a side of 0, a negative one or one past the readers' limit: refused
        size = parse_input_size(value) if isinstance(value, str) else check_input_size(value)
        if size is None:
            return None
        return size[0] if len(size) == 2 and size[0] == size[1] else size

    @field_validator("intensity", mode="before")
    @classmethod
    def _intensity(cls, value: Any) -> Any:
        if value is None:
            return None
        return intensity_name(value if isinstance(value, Mapping | list | tuple) else str(getattr(value, "value", value)))

    @field_validator("channels")
    @classmethod
    def _network_channels(cls, value: int | None, info: ValidationInfo) -> int | None:
        windows = hu_windows(info.data.get("intensity") or "")
        if value is not None and windows is not None and value != len(windows):
            raise ValueError(f"network channels {value}: the intensity {info.data['intensity']} gives the network "
                             f"{len(windows)} channel(s), one per CT window; give {len(windows)} or leave channels out")
        if value is not None and windows is None and value not in (1, 3):
            raise ValueError(f"network channels {value}: a network takes 1 (grey) or 3 (RGB) channels")
        return value

    @field_validator("output_kind", mode="before")
    @classmethod
    def _output_kind(cls, value: Any) -> Any:
        return None if value is None else output_kind_name(str(getattr(value, "value", value)))

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("arch is empty: name a zoo architecture (e.g. small-cnn, densenet121) or leave it out")
        return value

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs(cls, value: Any) -> Any:
        if value is None or value == "auto":
            return None
        if value not in ("logits", "probabilities"):
            raise ValueError(f"outputs {value!r}: write logits or probabilities (what the model's last layer returns), "
                             "or leave it out to have a final softmax/sigmoid detected")
        return value

    @model_validator(mode="after")
    def _binary_has_two_classes(self) -> ModelContract:
        if self.output_kind == "binary" and self.classes is not None and len(self.classes) != 2:
            raise ValueError(f"a binary model needs two class names [negative, positive], got {list(self.classes)}")
        return self

    # --- building one from what a face received
    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str | Path | None = None,
                     name_fields: bool = False) -> ModelContract:
        """The contract of keyword ``options`` (the fields above), refused in one line.

        Args:
            options: the contract's fields by name (``network_channels`` is accepted for
                ``channels``).
            where: the model file, named first in the error. Default None.
            name_fields: start each refusal with its field, as a form names its fields. Default
                False.

        Returns:
            The checked contract.

        Raises:
            ValueError: one line naming every value refused (:func:`contract_error_line`).
        """
        try:
            return cls.model_validate(dict(options))
        except ValidationError as err:
            raise ValueError(contract_error_line(err, where, name_fields)) from None

    @classmethod
    def given(cls, contract: ModelContract | Mapping[str, Any] | None, options: Mapping[str, Any],
              where: str | Path | None = None) -> ModelContract:
        """The one contract a caller gave, as a ModelContract.

        Args:
            contract: a ModelContract (returned as it is), a mapping of its fields, or None.
            options: the contract's fields given as keywords (the convenience of ``mr.load_model``
                and ``mr.evaluate``); those that are None, and a False ``trust_pickle``, count as
                not given.
            where: the model file, named first in an error. Default None.

        Returns:
            ``contract`` when given, else the contract ``options`` build (empty when none is given).

        Raises:
            ValueError: both ``contract`` and ``options`` were given (which should win would be a
                guess), or a value is refused.
        """
        given = {k: v for k, v in options.items() if v is not None and not (k == "trust_pickle" and v is False)}
        if contract is None:
            return cls.from_options(given, where)
        if given:
            head = f"{where}: " if where else ""
            raise ValueError(f"{head}the model's contract was given twice, as contract= and as {', '.join(given)}=; "
                             "give it once (put every field in the ModelContract)")
        return contract if isinstance(contract, ModelContract) else cls.from_options(contract, where)

    # --- what it declares
    def declared(self) -> dict[str, Any]:
        """The declared fields (those not at their default), JSON-ready: the configuration's
        ``model.load`` fields beside ``path``, the service's job record."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def require_declared(self, where: str | Path) -> None:
        """Refuse a file that is not a medrobust checkpoint loaded without its class names or its
        intensity convention (ValueError naming ``where``, before the file is read)."""
        if not self.classes:
            raise ValueError(f"{where}: is not a medrobust checkpoint, so the class names must be given in the model's "
                             f"output order; pass classes ({CLASSES_EXAMPLE.replace('e.g. ', 'e.g. --classes ')})")
        if self.intensity is None:
            raise ValueError(intensity_required(str(where)))

    def resolve(self, *, size: tuple[int, ...] | None = None, channels: int | None = None, channels_last: bool = False,
                intensity: str | None = None, stored_channels: int = 1, spatial_dims: int | None = None) -> InputContract:
        """The Classifier's resolved :class:`~medrobust.models.classifier.InputContract`: each declared
        value, else the keyword given here (what the model file says, or the loader's default);
        softmax outputs unless declared.

        Args:
            size: the input size (H, W) the file declares. Default None (any size).
            channels: the network channels the file or the zoo architecture declares. Default None
                (then 3).
            channels_last: the file's layout (True for Keras). Default False.
            intensity: the intensity convention when none is declared. Default None (then one
                must be declared).
            stored_channels: the channels of the images medrobust feeds. Default 1 (radiographs).
            spatial_dims: 3 when the file (an ONNX graph's 5-D input) or the zoo architecture
                takes volumes, 2 for images. Default None: from the input size's sides, else 2.

        Returns:
            The InputContract a :class:`~medrobust.models.classifier.Classifier` carries.

        Raises:
            ValueError: no class names, no intensity convention, or an impossible combination
                (a 2-D size for a volume model, without the file's name: the loader adds it).

        >>> ModelContract(classes="a,b", input_size=32, intensity="unit").resolve(channels=1)
        InputContract(classes=('a', 'b'), input_size=(32, 32), stored_channels=1, network_channels=1, ...)
        """
        from medrobust.models.classifier import InputContract

        if not self.classes:
            raise ValueError(f"the class names must be given in the model's output order ({CLASSES_EXAMPLE})")
        scale = self.intensity or intensity
        if scale is None:
            raise ValueError("the intensity convention must be given (unit, imagenet, symmetric or byte)")
        chosen = self.input_size if self.input_size is not None else size
        if spatial_dims == 3 and chosen is not None and len(check_input_size(chosen) or ()) != 3:
            raise ValueError(f"input size {chosen} names an image, but the model takes volumes (B, C, D, H, W); "
                             "give input_size as [depth, height, width] (e.g. [16, 64, 64])")
        return InputContract(
            classes=self.classes,
            input_size=chosen,  # type: ignore[arg-type]
            spatial_dims=spatial_dims if chosen is None else None,
            stored_channels=stored_channels,
            network_channels=self.channels or channels or len(hu_windows(scale) or ()) or 3,
            intensity=scale,  # type: ignore[arg-type]  (parsed by InputContract)
            output_kind=self.output_kind or "softmax",  # type: ignore[arg-type]
            channels_last=self.channels_last if self.channels_last is not None else channels_last,
        )

    @property
    def size(self) -> tuple[int, ...] | None:
        """The declared input size as (height, width), or a volume's (depth, height, width) (None:
        not declared)."""
        return check_input_size(self.input_size)


def contract_error_line(err: ValidationError, where: str | Path | None = None, name_fields: bool = False) -> str:
    """A contract's refusal as one line: our own sentences as they are (each names its value),
    pydantic's checks as ``field: what is wrong (got value)``; ``where`` (the model file) first.
    ``name_fields``: start every sentence with its field (as a form names its fields)."""
    parts = []
    for error in err.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"]) or "contract"
        text = str(error["msg"])
        if error["type"] == "value_error":
            sentence = text.removeprefix("Value error, ")
            parts.append(f"{field}: {sentence}" if name_fields and not sentence.startswith(field) else sentence)
        elif error["type"] == "extra_forbidden":
            known = ", ".join(ModelContract.model_fields)
            parts.append(f"{field} is not part of a model's contract (its fields: {known})")
        else:
            parts.append(f"{field}: {text[:1].lower() + text[1:]} (got {error.get('input')!r})")
    head = f"{where}: " if where else ""
    return head + "; ".join(parts)
