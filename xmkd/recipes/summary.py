"""`xmkd summary`: the networks a config builds, with their parameter counts, before any data or run exists.

Each recipe builds its networks with its own `build()` (the code a training run uses; nothing here knows any
method's wiring), on CPU and under `xmkd.io.architecture_only()`: files the config names (teacher checkpoints,
ImageNet weights, the dataset index, instance databases) are not read, so a summary works from the config alone.
Teachers are frozen as the trainer freezes them (`freeze_teachers`), and "trainable" counts exactly the parameters
the recipe hands to its optimizers (`Recipe.param_groups`). EMA mean teachers (`Recipe.emas`) are listed too: they
hold weights in memory, though no optimizer updates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xmkd.config import load_config, peek_recipe, resolve_config
from xmkd.engine.recipe import Recipe, freeze_teachers
from xmkd.errors import XmkdConfigError
from xmkd.io import architecture_only
from xmkd.recipes import get_recipe


def build_recipe(config: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """The recipe of `config` (a file or a shipped config's name) with its networks built on CPU, teachers frozen,
    reading no weight or data file. Raises XmkdConfigError for a config without `recipe:` or an invalid one."""
    name = peek_recipe(config, overrides)
    if not name:
        raise XmkdConfigError(f"{config}: no `recipe:` given")
    recipe_cls = get_recipe(name)
    cfg = load_config(config, overrides, schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    with architecture_only():
        recipe.build()
    freeze_teachers(recipe)
    return recipe


def _module_row(name: str, module: nn.Module, optimised: set[int], depth: int) -> dict[str, Any]:
    params = list(module.parameters())
    row: dict[str, Any] = {"name": name, "class": type(module).__name__,
                           "params": sum(p.numel() for p in params),
                           "trainable": sum(p.numel() for p in params if id(p) in optimised)}
    if depth > 0:
        row["children"] = [_module_row(n, m, optimised, depth - 1) for n, m in module.named_children()
                           if any(True for _ in m.parameters())]
    return row


def summarize(config: str | Path, overrides: Sequence[str] = (), depth: int = 1) -> dict[str, Any]:
    """Every network of the config's recipe: {"config", "recipe", "nets": [row, ...], "params", "trainable"}
    (`build_recipe`, then `summarize_recipe`)."""
    return {"config": str(resolve_config(config)), **summarize_recipe(build_recipe(config, overrides), depth)}


def summarize_recipe(recipe: Recipe, depth: int = 1) -> dict[str, Any]:
    """The networks of a built recipe: {"recipe", "nets": [row, ...], "params", "trainable"}.

    A row: name, class, role ("trained", "frozen" teacher, "ema" mean teacher, or "not optimised"), params (all
    elements of its parameters), trainable (those in the recipe's optimizer groups) and, while `depth` > 0, the
    same for its direct children that hold parameters. The totals count each parameter tensor once.
    """
    optimised = {id(p) for groups in recipe.param_groups().values() for g in groups for p in g["params"]}
    frozen = recipe.frozen()
    nets: list[tuple[str, nn.Module, str]] = []
    for name, net in recipe.nets.items():
        role = "frozen" if name in frozen else "trained" if any(id(p) in optimised for p in net.parameters()) \
            else "not optimised"
        nets.append((name, net, role))
    nets += [(f"ema/{name}", ema.module, "ema") for name, ema in recipe.emas().items()]
    rows = []
    for name, net, role in nets:
        rows.append({**_module_row(name, net, optimised, depth), "role": role})
    unique = {id(p): p for _, net, _ in nets for p in net.parameters()}
    return {"recipe": recipe.name, "nets": rows,
            "params": sum(p.numel() for p in unique.values()),
            "trainable": sum(p.numel() for i, p in unique.items() if i in optimised)}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a table: one line per network (children indented), then the totals."""
    lines: list[tuple[str, str, str, int, int]] = []

    def add(row: dict[str, Any], indent: int) -> None:
        lines.append(("  " * indent + row["name"], row["class"], row.get("role", ""), row["params"], row["trainable"]))
        for child in row.get("children", []):
            add(child, indent + 1)

    for row in summary["nets"]:
        add(row, 0)
    lines.append(("total", "", "", summary["params"], summary["trainable"]))
    w0 = max(len("network"), *(len(x[0]) for x in lines))
    w1 = max(len("class"), *(len(x[1]) for x in lines))
    out = [f"{summary['recipe']}: {summary['config']} (built on CPU; no weight or data file read)",
           f"{'network':<{w0}}  {'class':<{w1}}  {'role':<13}  {'parameters':>13}  {'trainable':>13}"]
    out += [f"{a:<{w0}}  {b:<{w1}}  {c:<13}  {d:>13,}  {e:>13,}" for a, b, c, d, e in lines]
    return "\n".join(out)
