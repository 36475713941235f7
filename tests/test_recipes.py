"""Recipes end to end on tiny synthetic data."""

from pathlib import Path

import pytest
from conftest import tiny_nuscenes

from xmkd.config import load_config
from xmkd.engine.trainer import Trainer
from xmkd.errors import XmkdConfigError
from xmkd.recipes import RECIPES, get_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_frames(tmp_path_factory):
    return tiny_nuscenes(tmp_path_factory.mktemp("recipes") / "nus", frames=2, frames_per_scene=2)


def test_lidar_seg_overfits_two_frames(two_frames, tmp_path):
    recipe = get_recipe("lidar_seg")
    cfg = load_config(REPO / "configs" / "lidar_seg" / "synthetic.yaml", [
        f"data.root={two_frames}", f"output_dir={tmp_path}", "data.train_split=mini_train",
        "data.val_split=mini_train", "data.num_workers=0", "data.batch_size=2", "train.max_iters=60",
        "train.val_every=60", "train.ckpt_every=60", "model.max_points=0", "model.augment.rotate=false",
        "model.augment.flip=false", "model.augment.scale=[1.0,1.0]", "train.schedule.warmup_iters=5"],
        schema=recipe.schema)
    metrics = Trainer(cfg, recipe, progress=False).fit()
    assert metrics["accuracy"] > 0.9 and metrics["miou"] > 0.5, metrics


def test_every_recipe_is_importable_and_configs_validate():
    for name in RECIPES:
        assert get_recipe(name).name == name
    for path in sorted((REPO / "configs").glob("*/*.yaml")):
        if path.parent.name == "_base":
            continue
        name = path.parent.name
        cfg = load_config(path, schema=get_recipe(name).schema)
        assert cfg.recipe == name
    with pytest.raises(XmkdConfigError, match="unknown recipe"):
        get_recipe("u3mkd")


def test_lidar_seg_teacher_trains_on_a_lidar_only_semantickitti(tmp_path, capsys):
    """SemanticKITTI as most people have it: scans and labels, no image_2/ and no calib.txt (so no LiDAR poses)."""
    import shutil

    import layouts

    from xmkd.cli import main

    root = layouts.build("semantickitti", tmp_path / "sk")
    for path in [*root.glob("sequences/*/image_2"), *root.glob("sequences/*/calib.txt")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert main(["prepare", "semantickitti", "--root", str(root), "--out", str(root / "xmkd_index"), "--cameras",
                 "none", "--quiet"]) == 0
    config = str(REPO / "configs" / "lidar_seg" / "semantickitti_teacher.yaml")
    small = [f"data.root={root}", f"output_dir={tmp_path / 'runs'}", "data.val_split=train", "data.batch_size=1",
             "data.num_workers=0", "data.voxel_size=0.4", "model.paste.database=''", "model.max_points=3000",
             "model.backbone.cr=0.25", "model.backbone.blocks=1", "model.backbone.head_dim=4",
             "model.backbone.window=2.4", "train.max_iters=2", "train.val_every=2", "train.ckpt_every=2",
             "train.schedule.warmup_iters=0"]
    assert main(["train", config, *small, "--quiet"]) == 1  # the config's 4 sweeps need the poses
    assert "sweeps=4 merges scans through poses.txt and calib.txt's Tr" in capsys.readouterr().err
    assert main(["train", config, *small, "data.sweeps=0", "--quiet"]) == 0
    run = tmp_path / "runs" / "u2mkd_teacher_semantickitti"
    assert (run / "checkpoints" / "last.pt").is_file()
