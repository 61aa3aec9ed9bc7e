"""One registry mechanism for models, attacks, defenses and detectors; the packages' exports."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from medrobust.specs.components import ComponentRegistry


def test_register_keeps_metadata_and_lists_by_pattern() -> None:
    registry: ComponentRegistry[object] = ComponentRegistry("widget")

    @registry.register("round-widget", sides=0)
    def round_widget(size: int = 1) -> dict[str, int]:
        return {"size": size}

    @registry.register("square-widget", sides=4)
    class SquareWidget:
        def __init__(self, size: float = 1.0) -> None:
            self.size = size

    assert registry.names() == ["round-widget", "square-widget"] and registry.names("sq*") == ["square-widget"]
    assert "round-widget" in registry and "oval" not in registry
    assert registry.metadata("square-widget") == {"sides": 4} and SquareWidget.name == "square-widget"
    assert registry.build("round-widget", {"size": "3"}) == {"size": 3}  # a builder function: typed too
    assert registry.build("square-widget", {"size": "1/4"}).size == 0.25
    with pytest.raises(TypeError):
        registry.metadata("square-widget")["sides"] = 3  # type: ignore[index]
    registry.register("square-widget", sides=4)(SquareWidget)  # the same class again: fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register("square-widget")(round_widget)
    with pytest.raises(ValueError, match="unknown widget 'oval'; known: round-widget, square-widget"):
        registry.get("oval")


def test_one_registry_mechanism_for_all_kinds() -> None:
    from medrobust.attacks.registry import _ATTACKS
    from medrobust.defenses.registry import _DEFENSES
    from medrobust.detection.registry import _DETECTORS
    from medrobust.models.registry import _ARCHITECTURES, get_spec

    for registry in (_ATTACKS, _DEFENSES, _DETECTORS, _ARCHITECTURES):
        assert type(registry) is ComponentRegistry
    assert _ARCHITECTURES.metadata("densenet121")["imagenet"] is True
    assert get_spec("small-cnn").channels == 1
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        get_spec("vgg")


def test_each_registry_is_complete_whichever_module_is_imported_first() -> None:
    """Importing only the registry modules (a fresh interpreter) still runs the packages'
    ``__init__``, whose imports register every built-in component: no lazy loader needed."""
    code = (
        "from medrobust.attacks.registry import list_attacks\n"
        "from medrobust.defenses.registry import list_defenses\n"
        "from medrobust.detection.registry import list_detectors\n"
        "from medrobust.models.registry import list_models\n"
        "print(len(list_attacks()), len(list_defenses()), len(list_detectors()), len(list_models()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    from medrobust.attacks import list_attacks
    from medrobust.defenses import list_defenses
    from medrobust.detection import list_detectors
    from medrobust.models import list_models

    assert out == [str(len(f())) for f in (list_attacks, list_defenses, list_detectors, list_models)]


def test_the_registry_mechanism_does_not_import_torch() -> None:
    code = "import sys, medrobust.specs.components; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("package", ["medrobust.attacks", "medrobust.defenses", "medrobust.detection", "medrobust.models"])
def test_every_name_in_all_is_exported(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.{name}"


def test_every_registered_defense_and_detector_is_exported_under_its_class_name() -> None:
    import medrobust.defenses as defenses
    import medrobust.detection as detection

    for name in defenses.list_defenses():
        cls = type(defenses.build_defense(name))
        assert getattr(defenses, cls.__name__) is cls and cls.name == name
    for name in detection.list_detectors():
        cls = type(detection.build_detector(name))
        assert getattr(detection, cls.__name__) is cls and cls.name == name
