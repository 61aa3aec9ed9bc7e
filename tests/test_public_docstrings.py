"""The public API documents itself the same way, and speed figures live in ``benchmarks/README.md``,
dated, not in the code.

The public API is:

* what ``medrobust.attacks``, ``medrobust.defenses`` and ``medrobust.detection`` export (their
  ``__all__``, registry functions included) plus the data room's entry points (the package
  exports none; :data:`DATA_API` lists them);
* the public layer: every callable name of ``medrobust``'s lazy table (``mr.load_model``,
  ``mr.Images``, ``mr.ModelContract``...; ``mr.PRESETS`` is a table, not a callable);
* what ``medrobust.models`` exports (its ``__all__``);
* every public class and function defined in a module of ``medrobust.execution``;
* the evaluation's entry points (:data:`EVALUATION_API`) and each stage module's ``run``.

Each callable's docstring has Google-style sections, kornia's and MONAI's habit: ``Args:`` when
it takes arguments (a class: when its constructor does), ``Returns:`` when a function returns
something (``Yields:`` when it is a generator), and ``Shape:`` when it takes or returns images.
An enumeration lists its members under ``Attributes:`` instead of ``Args:``; a protocol, and an
exception that keeps ``Exception``'s constructor, need neither. A class's own docstring counts,
not one inherited from its base. The decorators ``register_*`` are documented where their
registry is defined and are left out.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import medrobust
import medrobust.attacks
import medrobust.defenses
import medrobust.detection
import medrobust.evaluation.stages
import medrobust.execution
import medrobust.models
from medrobust.attacks import Attack
from medrobust.data.dataset import ImageDataset
from medrobust.defenses import Defense
from medrobust.detection import Detector
from medrobust.evaluation.config import ExperimentConfig
from medrobust.execution.engines import LocalEngine, RayEngine
from medrobust.execution.model_shipping import ModelSource
from medrobust.execution.resumable_stage import StageResult
from medrobust.execution.units import Unit, Workbench
from medrobust.layer.attack import AttackResult
from medrobust.layer.images import Images
from medrobust.models.classifier import Classifier
from medrobust.models.contract import ModelContract

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("attacks", "defenses", "detection", "data", "models", "execution", "evaluation", "layer", "launch.py")
"""Where no speed figure may be written: these rooms' modules and the command's launcher."""

DATA_API = (
    "medrobust.data.sources:open_dataset",
    "medrobust.data.sources:clean_image_folder",
    "medrobust.data.folders:folder_dataset",
    "medrobust.data.folders:unlabelled_images",
    "medrobust.data.medmnist:medmnist_dataset",
    "medrobust.data.nih:nih_dataset",
    "medrobust.data.nih:read_nih_table",
    "medrobust.data.nih:select_nih",
    "medrobust.data.io:read_image",
    "medrobust.data.io:write_png",
    "medrobust.data.io:is_image_file",
    "medrobust.data.dicom:read_dicom",
    "medrobust.data.dicom:write_dicom",
    "medrobust.data.splits:stratified_split",
    "medrobust.data.splits:patient_grouped_split",
    "medrobust.data.similarity:ssim",
    "medrobust.data.similarity:psnr",
    "medrobust.data.similarity:linf_distance",
    "medrobust.data.similarity:l2_distance",
    "medrobust.data.similarity:mean_abs_difference",
    "medrobust.data.dataset:ImageRecord",
    "medrobust.data.dataset:ImageDataset",
    "medrobust.data.dataset:ArrayImageDataset",
    "medrobust.data.dataset:FileImageDataset",
    "medrobust.data.phantom:PhantomDataset",
    "medrobust.data.phantom:generate_phantom",
)

EVALUATION_API = (
    "medrobust.evaluation.runner:run_experiment",
    "medrobust.evaluation.context:RunSetup",
    "medrobust.evaluation.context:RunContext",
    "medrobust.evaluation.stage_keys:StageKey",
    "medrobust.evaluation.stage_keys:folder_name",
    "medrobust.evaluation.stage_keys:attack_key",
    "medrobust.evaluation.stage_keys:gradient_adaptive_key",
    "medrobust.evaluation.stage_keys:square_adaptive_key",
    "medrobust.evaluation.stage_keys:defense_folder",
    "medrobust.evaluation.run_folder:claim_run_folder",
    "medrobust.evaluation.config:ExperimentConfig",
    "medrobust.evaluation.config:load_config",
    "medrobust.evaluation.config:validate_config",
    "medrobust.evaluation.stages.baseline:attack_subset",
    "medrobust.evaluation.stages.adaptive:run_portfolio",
)
"""The evaluation's entry points besides each stage's ``run`` (found by :func:`_stage_runs`): the
run, its context, its stages' names, its folder and its configuration. The adaptive module is the
defense stage's portfolio, entered through :func:`run_portfolio`."""

IMAGE_FUNCTIONS = {
    "jpeg", "tv_denoise", "tvm", "bit_depth", "median_filter", "structure_invariant_copies",
    "structure_invariant_transform",
}
"""Public functions that take and return image batches: their docstrings need ``Shape:``."""

IMAGE_API = {
    "medrobust.load_model", "medrobust.open_images", "medrobust.Images", "medrobust.predict", "medrobust.attack",
    "medrobust.AttackResult", "medrobust.defend", "medrobust.Defended", "medrobust.detect",
    "medrobust.models.Classifier", "medrobust.models.build_classifier", "medrobust.models.load_classifier",
    "medrobust.models.load_checkpoint", "medrobust.execution.pixels.quantise_8bit",
    "medrobust.execution.pixels.to_stored", "medrobust.execution.pixels.from_stored",
    "medrobust.execution.crafting.craft_batch", "medrobust.execution.units.CraftUnit",
    "medrobust.execution.units.PredictUnit", "medrobust.execution.detect_units.ScoreUnit",
    "medrobust.execution.detect_units.DetectUnit", "medrobust.execution.resumable_stage.StageResult",
}
"""The public layer's, the models' and execution's names that take, hold or return images (by
their public name): their docstrings need ``Shape:``."""

IMAGE_CLASSES = (Attack, Defense, Detector, ImageDataset)
"""Classes whose instances take or yield images: they (and their subclasses) need ``Shape:``."""

ENTRY_METHODS = (
    (Attack, "__call__"), (Attack, "perturb"), (Defense, "forward"), (Defense, "transform"),
    (Detector, "fit"), (Detector, "score"), (Detector, "detect"), (ImageDataset, "batches"),
    (ImageDataset, "load"), (ImageDataset, "__getitem__"),
    (Images, "batches"), (Images, "load"), (Images, "split"), (Classifier, "forward"), (Classifier, "logits"),
    (Classifier, "predict_proba"), (Classifier, "predict"), (ModelContract, "given"), (ModelContract, "resolve"),
    (ModelContract, "from_options"), (AttackResult, "summary"), (Workbench, "execute"), (Unit, "run"),
    (LocalEngine, "map"), (RayEngine, "map"), (StageResult, "images"), (StageResult, "take"),
    (ModelSource, "from_path"), (ModelSource, "materialise"), (ExperimentConfig, "check_components"),
)
"""The methods a user calls (or a subclass implements) on the base classes."""


def _listed(entries: tuple[str, ...]) -> list[tuple[str, object]]:
    """``module:name`` entries as ``(module.name, object)``."""
    out = []
    for entry in entries:
        module, name = entry.split(":")
        out.append((f"{module}.{name}", getattr(importlib.import_module(module), name)))
    return out


def _defined_in(module_name: str) -> list[tuple[str, object]]:
    """The public classes and functions a module defines (not those it imports)."""
    module = importlib.import_module(module_name)
    return [(f"{module_name}.{name}", value) for name, value in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module_name]


def _submodules(package) -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."))


def _stage_runs() -> list[tuple[str, object]]:
    """Each stage module's ``run`` (the adaptive portfolio's entry is in :data:`EVALUATION_API`)."""
    out = []
    for module_name in _submodules(medrobust.evaluation.stages):
        run = getattr(importlib.import_module(module_name), "run", None)
        if run is not None:
            out.append((f"{module_name}.run", run))
    return out


def _public_api() -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for package in (medrobust.attacks, medrobust.defenses, medrobust.detection, medrobust.models):
        for name in package.__all__:
            value = getattr(package, name)
            if callable(value) and not name.startswith("register_"):
                items.append((f"{package.__name__}.{name}", value))
    items += _listed(DATA_API)
    for name in medrobust._LAYER:
        value = getattr(medrobust, name)
        if callable(value):
            items.append((f"medrobust.{name}", value))
    for module_name in _submodules(medrobust.execution):
        items += _defined_in(module_name)
    items += _listed(EVALUATION_API)
    items += _stage_runs()
    return items


PUBLIC = _public_api()


def _takes_arguments(function: Callable[..., object]) -> bool:
    parameters = [p for p in inspect.signature(function).parameters.values() if p.name not in ("self", "cls")]
    return bool(parameters)


def _returns_something(function: Callable[..., object]) -> bool:
    annotation = inspect.signature(function).return_annotation
    return annotation not in (None, "None", inspect.Signature.empty)


def _own_doc(obj: object) -> str:
    """The docstring written on ``obj`` itself (a class without one does not borrow its base's)."""
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _constructor_sections(cls: type) -> list[str]:
    """``Attributes:`` for an enumeration; nothing for a protocol or an exception that keeps
    ``Exception``'s constructor; ``Args:`` when the constructor takes arguments."""
    if issubclass(cls, enum.Enum):
        return ["Attributes:"]
    init = cls.__init__  # type: ignore[misc]
    if getattr(cls, "_is_protocol", False) or init is object.__init__:
        return []
    if issubclass(cls, BaseException) and not any("__init__" in vars(k) for k in cls.__mro__
                                                   if k.__module__ != "builtins"):
        return []
    return ["Args:"] if _takes_arguments(init) else []


def _function_sections(function: Callable[..., object]) -> list[str]:
    wanted = ["Args:"] if _takes_arguments(function) else []
    if inspect.isgeneratorfunction(function):
        wanted.append("Yields:")
    elif _returns_something(function):
        wanted.append("Returns:")
    return wanted


def _missing_sections(name: str, obj: object) -> list[str]:
    doc = _own_doc(obj)
    if inspect.isclass(obj):
        wanted = _constructor_sections(obj)
        if issubclass(obj, IMAGE_CLASSES) or name in IMAGE_API:
            wanted.append("Shape:")
    else:
        wanted = _function_sections(obj)  # type: ignore[arg-type]
        if name.rsplit(".", 1)[-1] in IMAGE_FUNCTIONS or name in IMAGE_API:
            wanted.append("Shape:")
    return [section for section in wanted if not re.search(rf"^{section}$", doc, re.MULTILINE)]


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_callable_has_google_sections(name: str, obj: object) -> None:
    missing = _missing_sections(name, obj)
    assert not missing, f"{name}'s docstring lacks {', '.join(missing)}"


@pytest.mark.parametrize(("cls", "method"), ENTRY_METHODS, ids=[f"{c.__name__}.{m}" for c, m in ENTRY_METHODS])
def test_entry_method_has_args_and_returns(cls: type, method: str) -> None:
    function = inspect.getattr_static(cls, method)
    function = getattr(function, "__func__", function)  # a class or static method: the function it wraps
    doc = _own_doc(function)
    missing = [s for s in _function_sections(function) if not re.search(rf"^{s}$", doc, re.MULTILINE)]
    assert not missing, f"{cls.__name__}.{method}'s docstring lacks {', '.join(missing)}"


def test_the_public_api_is_all_checked() -> None:
    """The lists above are not empty by accident: every attack, defense and detector class the
    registries build is among the checked names."""
    checked = {obj for _, obj in PUBLIC}
    from medrobust.attacks.registry import _ATTACKS
    from medrobust.defenses.registry import _DEFENSES
    from medrobust.detection.registry import _DETECTORS

    for registry in (_ATTACKS, _DEFENSES, _DETECTORS):
        for name in registry.names():
            assert registry.get(name) in checked, f"{registry.kind} {name!r} is not in its package's __all__"


def test_the_layer_models_execution_and_stages_are_all_checked() -> None:
    """Every public-layer function and class, every export of ``medrobust.models``, a name of every
    module of ``medrobust.execution`` and an entry of every stage module is among the checked names."""
    checked = dict(PUBLIC)
    layer = {f"medrobust.{name}" for name in medrobust._LAYER if callable(getattr(medrobust, name))}
    assert {"medrobust.load_model", "medrobust.evaluate", "medrobust.ModelContract"} <= layer
    assert layer <= set(checked)
    assert {f"medrobust.models.{name}" for name in medrobust.models.__all__} <= set(checked)
    for module_name in _submodules(medrobust.execution):
        assert any(name.startswith(f"{module_name}.") for name in checked), f"nothing of {module_name} is checked"
    for module_name in _submodules(medrobust.evaluation.stages):
        assert any(name.startswith(f"{module_name}.") for name in checked), f"no entry of {module_name} is checked"
    assert IMAGE_API <= set(checked), f"IMAGE_API names unknown names: {sorted(IMAGE_API - set(checked))}"


SPEED_FIGURES = (
    re.compile(r"\b\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?x\b(?! [-+] )"),  # "2.35x", "0.86-0.90x" (not "2x - 1")
    re.compile(r"\b\d+(?:\.\d+)? times (?:as many|as fast|faster|slower)\b"),  # "2.3 times as many"
    re.compile(r"\b\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?(?: ?ms| s| min)\b"),  # "2.7 ms", "took 160 s", "14-19 s"
)


def _speed_figures(text: str) -> list[str]:
    return [m.group(0) for pattern in SPEED_FIGURES for m in pattern.finditer(text)]


def test_speed_figure_patterns_catch_what_they_should() -> None:
    text = ("2.35x / 2.03x faster; 0.86-0.90x of the time; 2.3 times as many images; 2.7 ms; took 160 s; "
            "14-19 s by default, 7.8 s tuned; 85.4% in 62 s of training; 3 min")
    assert _speed_figures(text) == ["2.35x", "2.03x", "0.86-0.90x", "2.3 times as many", "2.7 ms", "160 s", "14-19 s",
                                    "7.8 s", "62 s", "3 min"]
    assert _speed_figures("a 2x2 median, seed 0x9E3779B1, 8 x 8 blocks, 3 x 3 blocks, [-1, 1]: 2x - 1, "
                          "a network takes 1 or 3 channels, over 1 MB, 2 seconds_per_image, 2s complement") == []


@pytest.mark.parametrize("room", ROOMS)
def test_no_speed_figures_in_the_code(room: str) -> None:
    """Speed figures are dated and tied to a machine: they belong in ``benchmarks/README.md`` (the
    demo's training times: the README's demo section), and a docstring points there."""
    where = ROOT / "src" / "medrobust" / room
    paths = [where] if where.is_file() else sorted(where.rglob("*.py"))
    assert paths, f"{where}: nothing to check"
    found = {str(path.relative_to(ROOT)): figures for path in paths
             if (figures := _speed_figures(path.read_text(encoding="utf-8")))}
    assert not found, f"speed figures in the code (move them to benchmarks/README.md): {found}"


def test_every_benchmark_has_a_dated_section() -> None:
    readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh"))
    assert scripts, "no benchmark scripts found"
    missing = [s for s in scripts if f"## `{s}`" not in readme]
    assert not missing, f"benchmarks/README.md has no section for {missing}"
    assert re.search(r"\b2026-11-\d\d\b", readme), "the figures in benchmarks/README.md carry no date"
