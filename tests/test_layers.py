"""The package's layers only point down: no module imports a higher layer (the README's "Architecture").

Every ``import`` and ``from ... import`` of every module under ``albef/`` is parsed, the ones inside functions
included, and each imported ``albef`` package is placed in :data:`LAYERS`. A module may import its own layer
or a lower one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "albef"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("version", "errors", "registry", "fileio", "progress"),
    ("config",),
    ("data",),
    ("models",),
    ("losses",),
    ("checkpoint",),
    ("reporting",),
    ("engine",),
    ("evaluation",),
    ("tasks",),
    ("verification",),
    ("workflows",),
    ("cli", "__main__"),
)
"""Bottom to top; the README's "Architecture" section draws the same order."""

LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _unit(parts: tuple[str, ...]) -> str:
    """The layer unit of a module path inside ``albef`` (``engine/trainer.py`` -> ``engine``)."""
    return parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, albef unit)`` of every absolute import of an ``albef`` module in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "albef":
                names = [f"albef.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "albef" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def test_every_unit_of_the_package_has_a_layer() -> None:
    units = {_unit(p.relative_to(PACKAGE).parts) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert sorted(units - set(LEVEL)) == []


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        me = _unit(rel.parts)
        if me == "__init__":
            continue
        for line, unit in _imports(path):
            if unit in LEVEL and LEVEL[unit] > LEVEL[me]:
                upward.append(f"albef/{rel}:{line}: {me} imports {unit}")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The parser finds imports inside functions and ``from albef import x`` forms."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from albef.cli.main import main\n\nfrom albef import engine\n")
    assert sorted(_imports(module)) == [(2, "cli"), (4, "engine")]
