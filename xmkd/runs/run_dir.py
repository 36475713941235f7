"""A finished (or interrupted) run directory's recipe and config, read back from the config.yaml it saved."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from xmkd.config import load_config, peek_recipe
from xmkd.engine.recipe import Recipe
from xmkd.errors import XmkdConfigError, XmkdError
from xmkd.recipes import get_recipe


def run_recipe(run_dir: str | Path) -> type[Recipe]:
    """The recipe class that trained `run_dir` (named by its config.yaml). Raises XmkdError when the folder has no
    config.yaml (not a run directory) and XmkdConfigError when the file names no known recipe."""
    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        raise XmkdError(f"{run_dir}: not a run directory (no config.yaml)")
    try:
        return get_recipe(peek_recipe(config))
    except XmkdConfigError as err:  # name the file unless the message does
        raise XmkdConfigError(str(err) if str(err).startswith(str(config)) else f"{config}: {err}") from None


def run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> tuple[type[Recipe], DictConfig]:
    """(`run_recipe(run_dir)`, the run's config with `overrides` applied, validated by that recipe's schema)."""
    recipe_cls = run_recipe(run_dir)
    return recipe_cls, load_config(Path(run_dir) / "config.yaml", list(overrides), schema=recipe_cls.schema)
