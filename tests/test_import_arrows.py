"""The arrows of DESIGN.md, checked on the source: faces (``cli``, ``service``) -> public layer
-> ``evaluation`` -> ``execution`` -> {``attacks``, ``defenses``, ``detection``} -> ``models`` ->
``data``, and no import cycle anywhere;
``report`` reads only ``evaluation``'s result types; the faces import nothing but the public
layer, its configuration and result types, and ``report``; nothing below imports a face.

Every ``import`` is read from the syntax tree (module level, inside functions and under
``TYPE_CHECKING`` alike), so a lazy import cannot hide an arrow pointing the wrong way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "medrobust"

RANK = {"data": 0, "models": 1, "attacks": 2, "defenses": 2, "detection": 2, "execution": 3, "evaluation": 4, "layer": 5}
"""Rooms below the faces: each imports only rooms of a lower rank (and the package's root modules)."""

SIDEWAYS = {("detection", "defenses")}
"""Arrows between rooms of one rank, each one-way: feature squeezing's squeezers are defenses."""

FACES = ("cli", "service")
FACE_MAY_IMPORT = {
    "layer", "report",
    "evaluation.config", "evaluation.demo_config", "evaluation.results", "evaluation.scorecard",
}
"""What a face may import besides the root modules and itself: the public layer, its configuration
and result types, and the report."""

FACE_TO_FACE = {("cli", "service")}
"""``medrobust serve`` and ``medrobust worker`` start the service."""

STARTERS = {"__main__", "launch"}
"""Root modules whose job is to start the command line."""


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """Every ``medrobust`` module that ``path`` imports, relative imports resolved; ``from X
    import name`` counts as importing ``X.name`` where that is a module or a room."""
    own = _module_name(path, package).split(".")
    here = own if path.name == "__init__.py" else own[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [f"{module}.{alias.name}" if _is_module(f"{module}.{alias.name}", package) else module
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name == "medrobust" or name.startswith("medrobust."))
    return found


def _is_module(name: str, package: Path) -> bool:
    path = package.parent.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


LEAF_ROOMS = {"files", "safety", "specs", "logs"}
"""Rooms below every other: torch-free leaves anyone may use (the faces too); they import no room but each other."""


def _room(module: str) -> str:
    """``medrobust.evaluation.runner`` -> ``evaluation``; a root module -> ``<root>``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "<root>"


def _wrong_arrow(source: str, target: str) -> str | None:
    """Why ``source`` may not import ``target``, or None when it may."""
    here, there = _room(source), _room(target)
    inner = target.split(".", 1)[1] if "." in target else ""
    if here in LEAF_ROOMS and there not in LEAF_ROOMS and there != "<root>":
        return "a leaf room imports no other room"
    if there in ("<root>", *LEAF_ROOMS) or here == there:
        return None  # the package's root modules and leaf rooms are leaves anyone may use; a room uses itself
    if there in FACES and (here, there) not in FACE_TO_FACE and not (here == "<root>" and source.split(".")[-1] in STARTERS):
        return "nothing below a face imports it"
    if here in FACES:
        if (here, there) in FACE_TO_FACE or any(inner == allowed or inner.startswith(allowed + ".")
                                                for allowed in FACE_MAY_IMPORT):
            return None
        return "a face imports only the public layer, its configuration and result types, and report"
    if here == "report":
        return None if there == "evaluation" else "report reads only evaluation's result types"
    if here == "<root>":
        # the package's root modules are leaves (the lazy public layer and the starters aside)
        return None if source == "medrobust" or source.split(".")[-1] in STARTERS else "a root module imports no room"
    if here == "layer" and there == "report":
        return None  # mr.compare writes the comparison through report
    if here in RANK and there in RANK:
        if RANK[there] < RANK[here] or (here, there) in SIDEWAYS:
            return None
        return f"{here} (rank {RANK[here]}) may not import {there} (rank {RANK[there]})"
    return f"no arrow from {here} to {there}"


def _all_arrows() -> list[tuple[str, str]]:
    return sorted({(_module_name(path), target) for path in PACKAGE.rglob("*.py") for target in _imports(path)})


def test_every_import_follows_the_arrows():
    arrows = _all_arrows()
    assert len(arrows) > 300  # the scan sees the package (it has several hundred imports)
    wrong = [f"{source} -> {target}: {why}" for source, target in arrows
             if (why := _wrong_arrow(source, target)) is not None]
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize(("source", "target", "fine"), [
    ("medrobust.service.submission", "medrobust.data.class_names", False),
    ("medrobust.service.submission", "medrobust.layer.image_folders", True),
    ("medrobust.cli.app", "medrobust.evaluation.runner", False),
    ("medrobust.cli.app", "medrobust.evaluation.config", True),
    ("medrobust.cli.serve", "medrobust.service.app", True),
    ("medrobust.service.api", "medrobust.cli.app", False),
    ("medrobust.models.classifier", "medrobust.evaluation.config", False),
    ("medrobust.data.io", "medrobust.models.classifier", False),
    ("medrobust.attacks.pgd", "medrobust.defenses.jpeg", False),
    ("medrobust.detection.squeeze", "medrobust.defenses.bit_depth", True),
    ("medrobust.defenses.bit_depth", "medrobust.detection.squeeze", False),
    ("medrobust.report.html", "medrobust.attacks.sia", False),
    ("medrobust.evaluation.runner", "medrobust.layer.evaluate", False),
    ("medrobust.evaluation.runner", "medrobust.logs.per_image_log", True),
    ("medrobust.safety.safe_yaml", "medrobust.evaluation.config", False),
    ("medrobust.launch", "medrobust.cli.app", True),
    ("medrobust.service.api", "medrobust.files.atomic_files", True),
    ("medrobust.models.loading", "medrobust.safety.model_archive", True),
    ("medrobust.specs.components", "medrobust.models.registry", False),
    ("medrobust.safety.model_archive", "medrobust.safety.archive_members", True),
])
def test_the_rule_itself(source, target, fine):
    """The checker refuses what DESIGN.md forbids (so that the scan above can fail)."""
    assert (_wrong_arrow(source, target) is None) is fine


def test_relative_and_room_imports_are_resolved(tmp_path):
    assert "medrobust.data.class_names" in _imports(PACKAGE / "evaluation" / "class_plan.py")
    package = tmp_path / "medrobust"
    for room in ("models", "evaluation"):
        (package / room).mkdir(parents=True)
        (package / room / "__init__.py").write_text("")
    (package / "evaluation" / "config.py").write_text("")
    fake = package / "models" / "fake.py"
    fake.write_text("from ..evaluation import config\nfrom . import helper\nimport os\nfrom medrobust import data\n")
    assert _imports(fake, package) == {"medrobust.evaluation.config", "medrobust.models", "medrobust"}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm): each a set
    of modules that import one another round a loop, directly or through others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _module_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (lazy imports too; a name inside a module is its module)."""
    modules = {_module_name(path, package): path for path in package.rglob("*.py")}

    def module_of(name: str) -> str | None:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in modules else None

    return {name: {m for t in _imports(path, package) if (m := module_of(t)) is not None and m != name}
            for name, path in modules.items()}


def test_no_module_imports_itself_round_a_loop():
    """No import cycle anywhere in the package, lazy imports included: a cycle is two modules
    that need each other, which one module (or a third below both) should hold."""
    assert import_cycles(_module_graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
