"""The packages are the architecture (docs/architecture.md): each layer imports only from
the layers below it, no module imports itself back through others, and each package says
what it owns and which of its modules the others may use."""

from __future__ import annotations

import ast
import functools
import importlib
from pathlib import Path

import pytest

VOLLEY = Path(__file__).resolve().parent.parent / "volley"
# Bottom to top. ``volley`` itself (its version) and ``volley._core`` (the compiled hot
# loop, which imports nothing of ours) are leaves below them all; ``python -m volley``
# (``volley.__main__``) is the one door above them all.
LAYERS = ["numbers", "system", "records", "engine", "measure", "studies", "present", "cli"]
LEAVES = {"volley", "volley._core"}
DOOR = "volley.__main__"


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(VOLLEY.rglob("*.py")):
        parts = path.relative_to(VOLLEY.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """Every volley module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("volley")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("volley"):
            assert node.level == 0, f"{path}: relative import"
            known = modules()
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return found


def layer(module: str) -> int:
    if module in LEAVES:
        return -1
    if module == DOOR:
        return len(LAYERS)
    package = module.split(".")[1]
    assert package in LAYERS, f"{module} is in no layer: add its package to LAYERS"
    return LAYERS.index(package)


def test_every_module_sits_in_a_layer():
    for name in modules():
        layer(name)


def test_no_import_runs_up_a_layer():
    upward = [
        f"{name} -> {target}"
        for name, path in modules().items()
        for target in imports(path)
        if layer(target) > layer(name)
    ]
    assert upward == []


def test_no_module_imports_itself_back():
    graph = {name: imports(path) - {name} for name, path in modules().items()}
    circles = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


@pytest.mark.parametrize("package", LAYERS)
def test_each_package_says_what_it_owns_and_its_public_modules(package):
    module = importlib.import_module(f"volley.{package}")
    assert module.__doc__ and len(module.__doc__.split()) >= 10
    inside = {p.stem for p in (VOLLEY / package).glob("*.py") if not p.stem.startswith("_")}
    assert sorted(module.__all__) == sorted(inside)


def test_other_packages_use_only_a_package_public_modules():
    private = [
        f"{name} -> {target}"
        for name, path in modules().items()
        for target in imports(path)
        if target.count(".") == 2
        and target.split(".")[2].startswith("_")
        and target.split(".")[1] != name.split(".")[1]
    ]
    assert private == []
