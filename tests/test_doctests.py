"""The docstring examples run: ``doctest`` over every module of the public packages.

Each module of medrobust.attacks, medrobust.defenses, medrobust.detection, medrobust.data,
medrobust.models and the public layer (medrobust.layer) (found with ``pkgutil``, so a new module is
picked up by itself), plus medrobust.specs.components, is one test case; a module whose import needs an
optional dependency that is not installed is skipped with the reason. A last test counts the
examples, so the suite cannot pass with the examples gone. The examples use a tiny model and 32 px
images; they run on one torch thread (tiny tensors gain nothing from more, and on a busy machine
several threads wait on each other) with the global random state restored afterwards.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from collections.abc import Iterator
from types import ModuleType

import pytest
import torch

PACKAGES = ("medrobust.attacks", "medrobust.defenses", "medrobust.detection", "medrobust.data", "medrobust.models",
            "medrobust.layer")
EXTRA_MODULES = ("medrobust.specs.components",)
OPTIONAL_DEPENDENCIES = {"keras", "onnx", "onnxruntime", "tensorflow", "jax", "ray"}
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

MIN_EXAMPLES = 225
"""The examples written when this test was added (``>>>`` lines, as doctest counts them)."""


def _module_names() -> list[str]:
    names = set(EXTRA_MODULES)
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.add(package_name)
        names.update(info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."))
    return sorted(names)


MODULES = _module_names()


def _import(name: str) -> ModuleType:
    """The module, or a skip naming the optional dependency it needs and lacks."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if missing in OPTIONAL_DEPENDENCIES:
            pytest.skip(f"{name} needs the optional dependency {missing!r}, which is not installed")
        raise


def _doctests(module: ModuleType) -> list[doctest.DocTest]:
    return [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__) if t.examples]


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_pass(name: str, one_thread: None) -> None:
    module = _import(name)
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in _doctests(module):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)


def test_the_examples_are_there() -> None:
    count = 0
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] in OPTIONAL_DEPENDENCIES:
                continue
            raise
        count += sum(len(t.examples) for t in _doctests(module))
    assert count >= MIN_EXAMPLES, f"only {count} docstring examples found, expected at least {MIN_EXAMPLES}"
