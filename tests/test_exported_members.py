"""The public surface: every public module's ``__all__`` sorted, complete and importable, and
the package's modules free of import cycles and of reaching into each other's private names."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import slate_epoch

PACKAGE = Path(slate_epoch.__file__).parent
PUBLIC_MODULES = [
    "slate_epoch",
    "slate_epoch.cli",
    "slate_epoch.testing",
    "slate_epoch.testing.servers",
]


def _modules() -> dict[str, Path]:
    """Every module of the package (the backends included), by dotted name."""
    found: dict[str, Path] = {}
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="slate_epoch."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None
        assert spec.origin is not None
        found[info.name] = Path(spec.origin)
    found["slate_epoch"] = PACKAGE / "__init__.py"
    return found


def _isort_order(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions, each alphabetical (ruff's RUF022 order)."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_every_name_in_it_imports(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported, key=_isort_order), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported)
    for public in exported:
        assert getattr(module, public) is not None, f"{name}.{public}"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_complete(name: str) -> None:
    """Every public name the module defines or imports on purpose is in ``__all__``."""
    module = importlib.import_module(name)
    tree = ast.parse(Path(module.__file__ or "").read_text())
    defined = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:  # re-exports from our own modules
            defined |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            defined.add(node.name)
    public = {n for n in defined if not n.startswith("_")} - {"annotations"}
    assert public <= set(module.__all__), sorted(public - set(module.__all__))


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every import in the module, at any depth (lazy and
    TYPE_CHECKING-only ones included), relative ones resolved."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.append((base, [alias.name for alias in node.names]))
    return found


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in _imports(name, path):
            # "from package import module" imports the module
            for candidate in [target, *(f"{target}.{n}" for n in names)]:
                if candidate in modules and candidate != name:
                    graph[name].add(candidate)
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name], done)
    assert not cycles, cycles


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for name, path in _modules().items():
        for target, names in _imports(name, path):
            if not target.startswith("slate_epoch"):
                continue
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if target == package:  # a package's own private submodules are its own business
                private = [n for n in private if f"{target}.{n}" not in _modules()]
            if private:
                offenders.append(f"{name}: from {target} import {', '.join(private)}")
    assert not offenders, offenders
