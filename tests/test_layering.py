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


def xmkd_imports(path: Path) -> list[tuple[str, int]]:
    """(imported xmkd module, line) of every import statement in a file, including those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "xmkd":
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "xmkd"]
    return found


def upward_imports(package: Path) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        own = unit_of(".".join(("xmkd", *path.relative_to(package).with_suffix("").parts)).removesuffix(".__init__"))
        for module, line in xmkd_imports(path):
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
    (tmp_path / "engine" / "thing.py").write_text("def f():\n    from xmkd.recipes import get_recipe\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fine.py").write_text("from xmkd.io import atomic_write_text\nimport xmkd.geometry\n")
    expected = f"{tmp_path.name}/engine/thing.py:2: engine imports xmkd.recipes (a layer above)"
    assert upward_imports(tmp_path) == [expected]


@pytest.mark.parametrize("unit", sorted(p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
                                        if (p.suffix == ".py" or (p / "__init__.py").exists())
                                        and p.name != "__init__.py"))
def test_every_unit_has_a_layer(unit):
    assert unit in RANK, f"xmkd/{unit}: add it to LAYERS in tests/test_layering.py"
