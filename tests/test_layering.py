"""Imports inside the xmkd package run one way (docs/training.md): no module imports, at the top or inside a
function, from a layer above its own."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xmkd"
# bottom to top; units on one rung may import each other
LAYERS = [{"xmkd", "errors", "geometry"}, {"io", "ops"}, {"config"}, {"data"}, {"eval", "viz", "distill"},
          {"models"}, {"engine"}, {"recipes"}, {"runs"}, {"cli", "demo", "__main__"}]
RANK = {unit: rung for rung, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """'xmkd.engine.trainer' -> 'engine'; 'xmkd' (the package's __init__) -> 'xmkd'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def xmkd_imports(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported xmkd module, line) of every import statement in the file of `module` (dotted name), including those
    inside functions; relative imports are resolved, and `from xmkd import recipes` counts as importing
    xmkd.recipes."""
    found = []
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "xmkd":
                # `from xmkd import recipes` imports a unit; `from xmkd import __version__` the package itself
                found += [(f"xmkd.{a.name}" if base == "xmkd" and a.name in RANK else base, node.lineno)
                          for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "xmkd"]
    return found


def upward_imports(package: Path) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        name = ".".join(("xmkd", *path.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
        own = unit_of(name)
        for module, line in xmkd_imports(path, name):
            target = unit_of(module)
            if own not in RANK or target not in RANK:
                problems.append(f"{path.relative_to(package.parent)}:{line}: {own} or {target} has no layer")
            elif RANK[target] > RANK[own]:
                problems.append(f"{path.relative_to(package.parent)}:{line}: {own} imports {module} (a layer above)")
    return problems


def test_no_upward_imports():
    assert upward_imports(PACKAGE) == []


def test_the_check_sees_an_upward_import_inside_a_function(tmp_path):
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "thing.py").write_text(
        "from xmkd import io, runs\nfrom ..recipes import get_recipe\nfrom . import data\n\n\n"
        "def f():\n    from xmkd.recipes import get_recipe\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fine.py").write_text(
        "from xmkd.io import atomic_write_text\nimport xmkd.geometry\nfrom ..errors import XmkdError\n"
        "from .frame import Frame\n")
    found = ((1, "xmkd.runs"), (2, "xmkd.recipes"), (7, "xmkd.recipes"))
    assert upward_imports(tmp_path) == [f"{tmp_path.name}/engine/thing.py:{line}: engine imports {m} (a layer above)"
                                        for line, m in found]


@pytest.mark.parametrize("unit", sorted(p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
                                        if (p.suffix == ".py" or (p / "__init__.py").exists())
                                        and p.name != "__init__.py"))
def test_every_unit_has_a_layer(unit):
    assert unit in RANK, f"xmkd/{unit}: add it to LAYERS in tests/test_layering.py"
