"""Reading a run directory's saved config back (xmkd.runs.run_dir)."""

import yaml

from xmkd.config import CONFIG_DIR, load_config, save_config
from xmkd.recipes import get_recipe
from xmkd.runs.run_dir import run_config


def _saved_without(tmp_path, recipe, config, overrides, *keys):
    """A run folder whose config.yaml lacks `keys` (dotted), as one saved before those keys existed."""
    run = tmp_path / recipe
    save_config(load_config(CONFIG_DIR / config, overrides, schema=get_recipe(recipe).schema), run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    for key in keys:
        *parents, leaf = key.split(".")
        node = saved
        for p in parents:
            node = node[p]
        del node[leaf]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    return run


def test_a_run_saved_before_a_key_existed_keeps_the_behaviour_it_was_trained_with(tmp_path):
    # runs saved before model.voxel_feature averaged their voxels; the default is now the release's "first"
    run = _saved_without(tmp_path, "lidar_seg", "lidar_seg/nuscenes_teacher.yaml", [], "model.voxel_feature")
    assert run_config(run)[1].model.voxel_feature == "mean"
    assert run_config(run, ["model.voxel_feature=first"])[1].model.voxel_feature == "first"
    run = _saved_without(tmp_path, "u2mkd", "u2mkd/nuscenes.yaml", [], "model.voxel_feature",
                         "model.teacher.voxel_feature", "model.pixel_head_at_image")
    cfg = run_config(run)[1]
    assert (cfg.model.voxel_feature, cfg.model.teacher.voxel_feature) == ("mean", "mean")
    assert cfg.model.pixel_head_at_image is False  # the release's order became the default after the key existed
    # a run that saved the key keeps its own value
    run = _saved_without(tmp_path / "new", "lidar_seg", "lidar_seg/nuscenes_teacher.yaml", [])
    assert run_config(run)[1].model.voxel_feature == "first"
