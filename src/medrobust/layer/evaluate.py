"""``mr.evaluate``: the whole study on a model and images, resumable, into a run folder:
baseline -> attacks -> defenses (non-adaptive and adaptive) -> detectors -> ``metrics.json``.

Give a preset (``quick``, ``standard``, ``thorough``: :mod:`medrobust.layer.presets`) with a
model and images, or a full experiment configuration (an :class:`ExperimentConfig`, a dict,
or a YAML path). The configuration it resolved to is written to ``RUN/config.yaml``, so
``medrobust evaluate RUN/config.yaml`` repeats the run (for a model and images given from
files; ones held in memory are named there but cannot be re-read).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medrobust.data.image_size import read_side
from medrobust.evaluation.config import ExperimentConfig, validate_config
from medrobust.evaluation.results import RunMetrics
from medrobust.execution.progress import Progress, SilentProgress
from medrobust.layer.presets import PRESETS, preset_settings
from medrobust.models.contract import ModelContract
from medrobust.safety.safe_yaml import load_yaml_mapping

IN_MEMORY = "(in memory)"
MODEL_CHECK_STAGE = "model check"
"""The first stage a run reports: the model is loaded and, for a model file that does not carry
medrobust's contract, one blank image is run through it and its output checked against the
classes, so that a model that cannot be evaluated fails in seconds, with this stage named."""


def evaluate(model: Any = None, images: Any = None, preset: str | ExperimentConfig | Mapping[str, Any] | os.PathLike
             = "standard", run_dir: str | Path | None = None, progress: Progress | None = None, *,
             contract: ModelContract | Mapping[str, Any] | None = None,
             classes: Sequence[str] | str | None = None, input_size: int | Sequence[int] | None = None,
             intensity: str | None = None,
             output_kind: str | None = None, arch: str | None = None, trust_pickle: bool = False,
             size: int | None = None, normal_class: str | None = None,
             emergency_findings: Sequence[str] | None = None, class_map: Mapping[str, str] | None = None,
             split: str | Sequence[float] | None = None, train_data: str | None = None, device: str | None = None,
             seed: int | None = None, attack_images: int | None = None, name: str | None = None,
             output_dir: str | Path | None = None, restart: bool = False,
             execution: Mapping[str, Any] | None = None, title: str | None = None,
             model_version: str | None = None, robustbench: bool | None = None,
             guard: bool | Mapping[str, Any] | None = None,
             certify: bool | Mapping[str, Any] | None = None) -> RunMetrics:
    """Evaluate ``model`` on ``images`` with a ``preset`` or a configuration; returns the run's metrics.

    Every name is checked before a model is loaded or an image read. The model is then loaded
    first, reported to ``progress`` as the stage ``"model check"``; a finished part of the same
    run is reused from the run folder.

    Args:
        model: a path or module (see :func:`mr.load_model`); with a configuration, None keeps
            the configuration's ``model`` section. Default None.
        images: a data source, a dataset or tensors with labels (see :func:`mr.open_images`);
            with a configuration, None keeps its ``data.source``. Default None.
        preset: ``quick``, ``standard`` (the default) or ``thorough``
            (:mod:`medrobust.layer.presets`), or a configuration: an :class:`ExperimentConfig`, a
            dict or a YAML path.
        run_dir: the run folder. Default None: ``runs/<model name>-<preset>`` for a preset, the
            configuration's ``output_dir/name`` otherwise.
        progress: where the stages report their progress. Default None: silent.
        contract: the :class:`~medrobust.models.contract.ModelContract` of a model file that is
            not a medrobust checkpoint (its classes, intensity convention...), written to the
            configuration's ``model.load``. Default None.
        classes, input_size, intensity, output_kind, arch, trust_pickle: the contract's fields
            as keywords, a convenience that builds one: give these or ``contract``, not both (a
            ValueError says so).
        size: with a preset, the side images are resized to. Default None: the model's input
            size, else 224.
        normal_class: the data's class meaning "nothing found". Default None: the
            configuration's (found by name when it names none). A report setting: a finished
            run is re-read with it, nothing recomputed.
        emergency_findings: findings whose misses are emergencies (a report setting too).
            Default None: the configuration's.
        class_map: ``{data class: model class}`` for names that differ. Default None.
        split: ``"test"`` (every image tested, the default for a loaded model) or train/val/test
            fractions. Default None: the configuration's.
        train_data: a folder of other images of the same classes to train a transfer surrogate
            on (the standard and thorough presets). Default None.
        device: where the run computes (and the model is loaded). Default None: the
            configuration's (the model is then loaded on the CPU first).
        seed: the run's seed. Default None: the configuration's.
        attack_images: test images the attack stages use. Default None: the configuration's.
        name: the run folder's name under ``output_dir`` (instead of ``run_dir``). Default None.
        output_dir: the folder of run folders. Default None: the configuration's.
        restart: empty the run folder first instead of resuming it. Default False.
        execution: where the work runs, e.g. ``{"engine": "ray", "address": "auto", "workers":
            8}`` (a Ray cluster; the results are the same as a local run's). Default None: the
            configuration's (local).
        title: how the report and the statement name the evaluation (no result changes).
            Default None.
        robustbench: also report the accuracy under AutoAttack at 8/255 L-inf on float images,
            as RobustBench measures it (``metrics.robustbench``; not a scorecard row). Default
            None: the configuration's (off).
        model_version: the evaluated model's version, as its maker names it (no result
            changes). Default None.
        guard: evaluate the guard (a defense and the reference-free detectors, as
            ``mr.guard.from_run`` serves them) against an attacker who knows both (the ``guard``
            stage, ``metrics.guard``): True for the configuration's guard section or the default
            one, a mapping for the section's settings (``{"on_flag": "warn", "steps": 40}``),
            False to leave it out. Default None: the configuration's (every preset runs it).
        certify: also certify the attack subset by randomized smoothing (Cohen et al. 2019;
            ``metrics.certified``, the scorecard's ``certified`` entry, kept apart from its
            rows): True for the preset's settings (:func:`~medrobust.layer.presets.certify_settings`:
            n = 1,000 / 10,000 / 100,000 noise draws for quick / standard / thorough) or the
            configuration's (else the defaults), a mapping of ``sigma``, ``n0``, ``n``, ``alpha``,
            ``batch`` to change some of them, False to leave it out. Added to a finished run, it
            computes only the certificates. Default None: the configuration's (off).

    Returns:
        The run's :class:`~medrobust.evaluation.results.RunMetrics` (also in
        ``RUN/metrics.json``).

    Raises:
        ValueError: an unknown preset, a preset without a model or images, the contract given
            twice or refused, a configuration field or component spec refused (naming it), or
            a run folder holding another run's results
            (:class:`~medrobust.evaluation.run_folder.RunFolderConflict`).
    """
    from medrobust.evaluation.runner import run_experiment
    from medrobust.layer.models import check_contract, load_model

    is_file = isinstance(model, (str, os.PathLike))
    declared = ModelContract.given(contract, {"classes": classes, "input_size": input_size, "intensity": intensity,
                                              "output_kind": output_kind, "arch": arch, "trust_pickle": trust_pickle},
                                   where=Path(model) if is_file else None)
    if model is None and declared.declared():
        raise ValueError("mr.evaluate: the model's contract describes the model= file, and none was given; pass "
                         "model=, or declare the contract in the configuration's model.load")
    if isinstance(preset, str) and preset not in PRESETS and Path(preset).suffix in (".yaml", ".yml"):
        preset = Path(preset)

    def resolve(loaded) -> ExperimentConfig:
        """The configuration, validated, its component specs built once (ValueError naming the field)."""
        if isinstance(preset, str):
            raw = _preset_config(preset, model, loaded, images, declared, size, train_data)
        else:
            raw = _given_config(preset)
            if model is not None:
                raw["model"] = {"load": _load_section(model, loaded, declared)}
            if images is not None:
                raw.setdefault("data", {})["source"] = _data_name(images)
        data = raw.setdefault("data", {})
        for key, value in {"normal_class": normal_class, "class_map": dict(class_map) if class_map else None,
                           "emergency_findings": list(emergency_findings) if emergency_findings is not None
                           else None}.items():
            if value is not None:
                data[key] = value
        if split is not None:
            data["split"] = ("test" if isinstance(split, str) and split.strip().lower() == "test"
                             else [float(s) for s in split])
        for key, value in {"device": device, "seed": seed, "attack_images": attack_images, "title": title,
                           "model_version": model_version, "robustbench": robustbench,
                           "execution": dict(execution) if execution is not None else None}.items():
            if value is not None:
                raw[key] = value
        if guard is not None:
            raw["guard"] = ({**(raw.get("guard") or {}), **dict(guard)} if isinstance(guard, Mapping)
                            else (raw.get("guard") or {}) if guard else {"enabled": False})
        if certify is not None:
            raw["certify"] = _certify_section(certify, preset if isinstance(preset, str) else None, raw.get("certify"))
        if run_dir is not None:
            raw["name"], raw["output_dir"] = Path(run_dir).name, str(Path(run_dir).parent)
        for key, value in {"name": name, "output_dir": output_dir}.items():  # validated with the rest
            if value is not None:
                raw[key] = str(value)
        config = validate_config(raw, str(preset) if isinstance(preset, Path) else None)
        config.check_components()
        return config

    # Every name is checked before a model is loaded or an image read (a load can take minutes):
    # the preset, the contract's names, and a configuration's fields and attack, defense and
    # detector specs (a preset's own are built in; it needs the loaded model to resolve).
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if model is None or images is None:
            raise ValueError("mr.evaluate with a preset needs a model and images (or pass a configuration)")
    check_contract(declared)  # its architecture's name (the other names were checked when it was built)
    if not isinstance(preset, str) and (model is None or is_file):
        resolve(None)  # a model held in memory is named by its weights' digest: resolved once it is wrapped
    loaded = None
    if model is not None:  # the run's first stage: a model that cannot be evaluated fails here, at once
        with (progress or SilentProgress()).stage(MODEL_CHECK_STAGE, 1) as bar:
            loaded = load_model(model, declared, device=device or "cpu")
            bar.advance(1)
    config = resolve(loaded)
    dataset = (_in_memory_dataset(images, list(loaded.classes) if loaded is not None else None)
               if images is not None and _is_in_memory(images) else None)
    return run_experiment(config, progress=progress, restart=restart, model=loaded, dataset=dataset)


def _preset_config(preset: str, model: Any, loaded, images: Any, contract: ModelContract, size: int | None,
                   train_data: str | None) -> dict[str, Any]:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(model)).stem if isinstance(model, (str, os.PathLike))
                  else type(model).__name__).strip("-.") or "model"
    fixed = read_side(loaded.input_size) if loaded is not None else None
    return {
        "name": f"{name}-{preset}",
        "data": {"source": _data_name(images), "size": size or fixed or 224},
        "model": {"load": _load_section(model, loaded, contract)},
        **preset_settings(preset, differentiable=bool(getattr(loaded, "differentiable", True)), train_data=train_data,
                          volumes=getattr(loaded, "spatial_dims", 2) == 3, hu=_reads_hu(loaded)),
    }


def _reads_hu(loaded) -> bool:
    """Whether the loaded model reads CT in HU (its contract's CT windows): its budgets are then in HU."""
    from medrobust.models.intensity import network_channels_of

    return loaded is not None and network_channels_of(loaded.contract.intensity) is not None


def _certify_section(certify: bool | Mapping[str, Any], preset: str | None,
                     configured: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The configuration's ``certify`` section for ``mr.evaluate(certify=...)``: False -> None (off);
    True -> the preset's settings, or the configuration's own (else the defaults); a mapping -> those
    settings over the same."""
    from medrobust.layer.presets import certify_settings

    if certify is False:
        return None
    base = certify_settings(preset) if preset is not None else dict(configured or {})
    return {**base, **(dict(certify) if isinstance(certify, Mapping) else {})}


def _given_config(preset: Any) -> dict[str, Any]:
    if isinstance(preset, ExperimentConfig):
        # the fields it was given, not its defaults: what a run decides for its data when a field is
        # left out (the squeezers and the masking check's budget on CT) stays the run's to decide
        return preset.model_dump(mode="json", exclude_unset=True)
    if isinstance(preset, Mapping):
        return dict(preset)
    # A file is read as written and validated with the model and images given beside it (its
    # refusals still name it): validated alone, a file without a model section resolved
    # data.split for a model it would train, and a loaded model was tested on a sixth of the
    # images instead of every one.
    return load_yaml_mapping(Path(preset))


def _load_section(model: Any, loaded, contract: ModelContract) -> dict[str, Any]:
    """The configuration's ``model.load``: a file's path with the fields its contract declares; a
    model held in memory by its weights' digest and its classes."""
    if isinstance(model, (str, os.PathLike)):
        return {"path": str(model), **contract.declared()}
    return {"path": f"{IN_MEMORY} {type(model).__name__} {_fingerprint(loaded.state_dict().values())}",
            "classes": list(loaded.classes)}


def _fingerprint(tensors) -> str:
    """``sha256:`` of tensors' bytes: a model or images held in memory are named in config.yaml
    by their content, so a run folder is resumed only with the same ones."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for t in tensors:
        if isinstance(t, torch.Tensor):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def _data_name(images: Any) -> str:
    """A path as it is; images in memory by their content (tensors) or their type (datasets)."""
    if isinstance(images, (str, os.PathLike)):
        return str(images)
    import torch

    if isinstance(images, torch.Tensor):
        return f"{IN_MEMORY} {_fingerprint([images])}"
    if isinstance(images, tuple):
        return f"{IN_MEMORY} {_fingerprint(images)}"
    if getattr(images, "tensors", None) is not None:  # Images over tensors
        return f"{IN_MEMORY} {_fingerprint(images.tensors)}"
    records = getattr(images, "records", None) or getattr(getattr(images, "dataset", None), "records", None)
    if records is not None:  # a dataset: named by its records (ids, labels, files)
        import hashlib

        listing = "\n".join(f"{r.id}\t{r.label}\t{r.path}" for r in records).encode("utf-8", "backslashreplace")
        return f"{IN_MEMORY} {type(images).__name__} sha256:{hashlib.sha256(listing).hexdigest()[:16]}"
    return f"{IN_MEMORY} {type(images).__name__}"


def _is_in_memory(images: Any) -> bool:
    return not isinstance(images, (str, os.PathLike))


def _in_memory_dataset(images: Any, classes: list[str] | None):
    """An ImageDataset over images given as tensors, ``(x, y)``, a dataset or Images; tensors'
    labels are indices into ``classes`` (the model's)."""
    import numpy as np

    from medrobust.data.dataset import ArrayImageDataset, ImageDataset, ImageRecord
    from medrobust.layer.images import open_images

    if isinstance(images, ImageDataset):
        return images
    opened = open_images(images, classes=classes)
    if opened.dataset is not None:
        return opened.dataset
    if not opened.labelled:
        raise ValueError("mr.evaluate needs each image's true class: pass labels= and classes= with the tensors")
    x, y, ids = opened.load()
    if x.shape[1] != 1:
        raise ValueError(f"mr.evaluate reads grey radiographs (B, 1, H, W); got {x.shape[1]} channels")
    assert y is not None
    records = [ImageRecord(label=int(label), id=i, split="test") for label, i in zip(y.tolist(), ids)]
    return ArrayImageDataset(x[:, 0].numpy().astype(np.float32), records, opened.classes or [])
