"""A finished (or interrupted) run directory's recipe and config, read back from the config.yaml it saved."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from xmkd.config import load_config, peek_recipe
from xmkd.engine.recipe import Recipe
from xmkd.errors import XmkdConfigError, XmkdError
from xmkd.recipes import get_recipe

# Config keys added after runs were saved, with the value that reproduces how a run whose config.yaml lacks them
# was trained (a config.yaml is the whole resolved config of its day; a new key's default may be another behaviour)
ADDED_KEYS = {"model.voxel_feature": "mean",  # before it: every voxel's input was its points' mean
              "model.teacher.voxel_feature": "mean",
              "model.pixel_head_at_image": "false",  # before it: the head at the decoder's resolution
              "model.translate_3d": "false",  # xmuda / ftd / bftd: no random 3D shift before it (7527317)
              "model.style_float": "false",  # ftd: stylised / mixed images rounded to uint8 before it (8b0656f)
              "model.redraw_empty": "false",  # lidar_det / hsrdn: a boxless training scene trained as it was (e72f424)
              # keys whose default is still the behaviour before them; listed so that a later default cannot
              # change how an older run reads
              "train.schedule.final_ratio": "0.0001",  # onecycle's fixed end before it (c468419)
              "train.schedule.release_warmup": "false",  # (413d906)
              "train.schedule.momentum": "[]",  # the optimizer's fixed momentum before it (013e02b)
              "model.augment.translate": "0.0",  # no translation before it (413d906)
              "model.teacher.augment.translate": "0.0",
              "model.depth_maps": "lidar",  # hsrdn / cmkd: depth targets from the projected LiDAR (7b5c65c)
              "model.flip_heading": "image",  # (b9b455a)
              "model.student.oracle_bins": "cell",  # hsrdn / cmkd oracle: one-hot bin of the cell's depth before it
              "model.student.se_init": "inline",  # hsrdn: the SE gate's convs drawn in line before it (2026-12-03)
              # hsrdn: the relation terms trained the student before it (the release only logs them)
              "model.relation_gradient": "true"}
_ABSENT = object()


def run_recipe(run_dir: str | Path) -> type[Recipe]:
    """The recipe class that trained `run_dir` (named by its config.yaml). Raises XmkdError when the folder has no
    config.yaml (not a run directory) and XmkdConfigError when the file names no known recipe."""
    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        raise XmkdError(f"{run_dir}: not a run directory (no config.yaml)")
    return _recipe_of(config)


def _recipe_of(config: Path) -> type[Recipe]:
    try:
        return get_recipe(peek_recipe(config))
    except XmkdConfigError as err:  # name the file unless the message does
        raise XmkdConfigError(str(err) if str(err).startswith(str(config)) else f"{config}: {err}") from None


def run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> tuple[type[Recipe], DictConfig]:
    """(`run_recipe(run_dir)`, the run's config with `overrides` applied, validated by that recipe's schema). A key
    of `ADDED_KEYS` that the saved file lacks gets the value it was trained with, not today's default."""
    run_recipe(run_dir)  # a run directory, whose config names a recipe
    return config_file(Path(run_dir) / "config.yaml", overrides)


def config_file(config: str | Path, overrides: Sequence[str] = ()) -> tuple[type[Recipe], DictConfig]:
    """`run_config` of a saved config file at any path (e.g. a checkpoint's stored config written out). Raises
    XmkdConfigError naming the file when it names no known recipe or does not load."""
    config = Path(config)
    recipe_cls = _recipe_of(config)
    saved, schema = OmegaConf.load(config), OmegaConf.structured(recipe_cls.schema)
    then = [f"{k}={v}" for k, v in ADDED_KEYS.items() if OmegaConf.select(saved, k, default=_ABSENT) is _ABSENT
            and OmegaConf.select(schema, k, default=_ABSENT) is not _ABSENT]
    return recipe_cls, load_config(config, [*then, *overrides], schema=recipe_cls.schema)
