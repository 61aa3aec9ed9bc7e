"""The public API of attacks, defenses, detection and data documents itself the same way, and
speed figures live in ``benchmarks/README.md``, dated, not in the code.

The public API is what ``medrobust.attacks``, ``medrobust.defenses`` and ``medrobust.detection``
export (their ``__all__``, registry functions included) plus the data room's entry points (the
package exports none; :data:`DATA_API` lists them). Each callable's docstring has Google-style
sections, kornia's and MONAI's habit: ``Args:`` when it takes arguments, ``Returns:`` when a
function returns something, and ``Shape:`` when it takes or returns images. The decorators
``register_*`` are documented where their registry is defined and are left out.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import medrobust.attacks
import medrobust.defenses
import medrobust.detection
from medrobust.attacks import Attack
from medrobust.data.dataset import ImageDataset
from medrobust.defenses import Defense
from medrobust.detection import Detector

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("attacks", "defenses", "detection", "data")

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

IMAGE_FUNCTIONS = {
    "jpeg", "tv_denoise", "tvm", "bit_depth", "median_filter", "structure_invariant_copies",
    "structure_invariant_transform",
}
"""Public functions that take and return image batches: their docstrings need ``Shape:``."""

IMAGE_CLASSES = (Attack, Defense, Detector, ImageDataset)
"""Classes whose instances take or yield images: they (and their subclasses) need ``Shape:``."""

ENTRY_METHODS = (
    (Attack, "__call__"), (Attack, "perturb"), (Defense, "forward"), (Defense, "transform"),
    (Detector, "fit"), (Detector, "score"), (Detector, "detect"), (ImageDataset, "batches"),
    (ImageDataset, "load"), (ImageDataset, "__getitem__"),
)
"""The methods a user calls (or a subclass implements) on the base classes."""


def _public_api() -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for package in (medrobust.attacks, medrobust.defenses, medrobust.detection):
        for name in package.__all__:
            value = getattr(package, name)
            if callable(value) and not name.startswith("register_"):
                items.append((f"{package.__name__}.{name}", value))
    for entry in DATA_API:
        module, name = entry.split(":")
        items.append((f"{module}.{name}", getattr(importlib.import_module(module), name)))
    return items


PUBLIC = _public_api()


def _takes_arguments(function: Callable[..., object]) -> bool:
    parameters = [p for p in inspect.signature(function).parameters.values() if p.name not in ("self", "cls")]
    return bool(parameters)


def _returns_something(function: Callable[..., object]) -> bool:
    annotation = inspect.signature(function).return_annotation
    return annotation not in (None, "None", inspect.Signature.empty)


def _missing_sections(name: str, obj: object) -> list[str]:
    doc = inspect.getdoc(obj) or ""
    wanted: list[str] = []
    if inspect.isclass(obj):
        init = obj.__init__  # type: ignore[misc]
        if init is not object.__init__ and _takes_arguments(init):
            wanted.append("Args:")
        if issubclass(obj, IMAGE_CLASSES):
            wanted.append("Shape:")
    else:
        if _takes_arguments(obj):  # type: ignore[arg-type]
            wanted.append("Args:")
        if _returns_something(obj):  # type: ignore[arg-type]
            wanted.append("Returns:")
        if name.rsplit(".", 1)[-1] in IMAGE_FUNCTIONS:
            wanted.append("Shape:")
    return [section for section in wanted if not re.search(rf"^{section}$", doc, re.MULTILINE)]


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_callable_has_google_sections(name: str, obj: object) -> None:
    missing = _missing_sections(name, obj)
    assert not missing, f"{name}'s docstring lacks {', '.join(missing)}"


@pytest.mark.parametrize(("cls", "method"), ENTRY_METHODS, ids=[f"{c.__name__}.{m}" for c, m in ENTRY_METHODS])
def test_entry_method_has_args_and_returns(cls: type, method: str) -> None:
    doc = inspect.getdoc(getattr(cls, method)) or ""
    sections = ("Args:", "Yields:" if method == "batches" else "Returns:")
    missing = [s for s in sections if not re.search(rf"^{s}$", doc, re.MULTILINE)]
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


SPEED_FIGURES = (
    re.compile(r"\b\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?x\b"),  # "2.35x", "0.86-0.90x"
    re.compile(r"\b\d+(?:\.\d+)? times (?:as many|as fast|faster|slower)\b"),  # "2.3 times as many"
    re.compile(r"\b\d+(?:\.\d+)? ?ms\b"),  # "2.7 ms"
    re.compile(r"\b(?:took|takes|ran in) (?:about )?\d"),  # "took 160 s"
)


def _speed_figures(text: str) -> list[str]:
    return [m.group(0) for pattern in SPEED_FIGURES for m in pattern.finditer(text)]


def test_speed_figure_patterns_catch_what_they_should() -> None:
    text = "2.35x / 2.03x faster; 0.86-0.90x of the time; 2.3 times as many images; 2.7 ms; took 160 s"
    assert _speed_figures(text) == ["2.35x", "2.03x", "0.86-0.90x", "2.3 times as many", "2.7 ms", "took 1"]
    assert _speed_figures("a 2x2 median, seed 0x9E3779B1, 8 x 8 blocks, 3 x 3 blocks") == []


@pytest.mark.parametrize("room", ROOMS)
def test_no_speed_figures_in_the_code(room: str) -> None:
    """Speed figures are dated and tied to a machine: they belong in ``benchmarks/README.md``, and
    a docstring points to the benchmark by name."""
    found = {str(path.relative_to(ROOT)): figures
             for path in sorted((ROOT / "src" / "medrobust" / room).rglob("*.py"))
             if (figures := _speed_figures(path.read_text(encoding="utf-8")))}
    assert not found, f"speed figures in the code (move them to benchmarks/README.md): {found}"


def test_every_benchmark_has_a_dated_section() -> None:
    readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh"))
    assert scripts, "no benchmark scripts found"
    missing = [s for s in scripts if f"## `{s}`" not in readme]
    assert not missing, f"benchmarks/README.md has no section for {missing}"
    assert re.search(r"\b2026-11-\d\d\b", readme), "the figures in benchmarks/README.md carry no date"
