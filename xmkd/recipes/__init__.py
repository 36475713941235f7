"""Recipes (methods) by name. A config's `recipe:` is a name in `RECIPES`, or `package.module:Class` for a
recipe that lives outside xmkd. Modules are imported only when their recipe is asked for."""

from __future__ import annotations

import importlib

from xmkd.errors import XmkdConfigError

RECIPES: dict[str, str] = {
    "point_mlp": "xmkd.recipes.point_mlp:PointMLPRecipe",
    "lidar_seg": "xmkd.recipes.lidar_seg:LidarSegRecipe",
    "u2mkd": "xmkd.recipes.u2mkd:U2MKDRecipe",
    "camera_seg": "xmkd.recipes.camera_seg:CameraSegRecipe",
    "lidar_det": "xmkd.recipes.lidar_det:LidarDetRecipe",
    "hsrdn": "xmkd.recipes.hsrdn:HSRDNRecipe",
    "cmkd": "xmkd.recipes.hsrdn:CMKDRecipe",
    "xmuda": "xmkd.recipes.xmuda:XMUDARecipe",
    "ftd": "xmkd.recipes.ftd:FtDRecipe",
    "bftd": "xmkd.recipes.bftd:BFtDRecipe",
    "source_only": "xmkd.recipes.xmuda:SourceOnlyRecipe",
    "target_only": "xmkd.recipes.xmuda:TargetOnlyRecipe",
}


def get_recipe(name: str) -> type:
    """The recipe class `name` names. Raises XmkdConfigError for an unknown name, a failed import, or a class that
    is not a `Recipe`."""
    target = RECIPES.get(name, name if ":" in name else None)
    if target is None:
        raise XmkdConfigError(f"recipe: unknown recipe {name!r}; known: {', '.join(RECIPES)} "
                              "(or package.module:Class)")
    module, cls = target.split(":")
    try:
        found = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as err:
        raise XmkdConfigError(f"recipe: cannot import {target}: {err}") from None
    from xmkd.engine.recipe import Recipe

    if not (isinstance(found, type) and issubclass(found, Recipe)):
        raise XmkdConfigError(f"recipe: {target} is not a recipe (a subclass of xmkd.engine.recipe.Recipe)")
    return found
