"""The published nuScenes configs build their full-size models and run one training step (on a synthetic
nuScenes-format frame with six 640x360 cameras and sweeps)."""

from pathlib import Path

import torch
from conftest import tiny_nuscenes

from xmkd.config import load_config
from xmkd.engine.checkpoint import save
from xmkd.models.point.sparse_unet import SparseUNet
from xmkd.recipes import get_recipe

REPO = Path(__file__).resolve().parents[1]
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")


def test_nuscenes_u2mkd_config_at_full_size_runs_one_step(tmp_path):
    root = tiny_nuscenes(tmp_path / "nus", frames=1, frames_per_scene=1, image_size=(640, 360), cameras=CAMERAS,
                         sweeps=True)
    recipe_cls = get_recipe("u2mkd")
    overrides = [f"data.root={root}", f"output_dir={tmp_path}", "data.train_split=mini_train",
                 "data.num_workers=0", "model.paste.database=''"]
    cfg = load_config(REPO / "configs" / "u2mkd" / "nuscenes.yaml", overrides, schema=recipe_cls.schema)
    teacher = SparseUNet(4, 16, cfg.model.teacher.backbone)  # keyframe + 4 sweeps: x, y, z, intensity (release)
    save(tmp_path / "teacher.pt", {"models": {"net": teacher.state_dict()}})
    cfg = load_config(REPO / "configs" / "u2mkd" / "nuscenes.yaml",
                      [*overrides, f"model.teacher.checkpoint={tmp_path / 'teacher.pt'}"], schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    student = recipe.nets["student"]
    assert student.lidar.widths[0] == 32 and recipe.nets["teacher"].widths[0] == 64  # cr 1 and cr 2
    assert student.camera.backbone.conv1.stride == (1, 1)  # the release's full-resolution stem
    for p in recipe.nets["teacher"].parameters():
        p.requires_grad_(False)
    recipe.nets["teacher"].eval()
    sample = recipe.train_dataset()[(0, 0)]
    assert sample["images"].shape == (3, 360, 640, 3)  # 6 cameras, 3 dropped at random
    assert len(sample["t_xyz"]) > len(sample["xyz"])  # the teacher sees the sweeps too
    batch = recipe.collate([sample])
    losses = recipe.training_step(batch, 0)
    assert set(losses) == {"ce", "lovasz", "pixel_ce", "pixel_lovasz", "imputation", "kl", "feat"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert student.camera.backbone.conv1.weight.grad.abs().sum() > 0
