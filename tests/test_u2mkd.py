"""U2MKD: distillation losses, fusion blocks, the student's data path and one training step."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_nuscenes

from xmkd.config import load_config
from xmkd.distill.losses import feature_mse, kl_logits
from xmkd.engine.checkpoint import save
from xmkd.errors import XmkdConfigError
from xmkd.geometry.camera import project_points
from xmkd.models.fusion import CameraToLidar, LidarToCamera
from xmkd.models.point.sparse_unet import SparseUNet
from xmkd.recipes import get_recipe

REPO = Path(__file__).resolve().parents[1]
SMALL = ["model.backbone.cr=0.125", "model.decoder_width=32", "model.max_points=3000",
         "model.teacher.backbone.cr=0.125", "data.image_size=[96,64]", "data.num_workers=0"]


def test_kl_is_zero_for_identical_logits_and_trains_only_the_student():
    t = torch.randn(50, 6, requires_grad=True)
    s = t.detach().clone().requires_grad_(True)
    assert kl_logits(s, t).abs() < 1e-6
    s2 = torch.randn(50, 6, requires_grad=True)
    loss = kl_logits(s2, t) + feature_mse(s2, t)
    loss.backward()
    assert s2.grad.abs().sum() > 0 and t.grad is None


def test_imputation_loss_does_not_reach_image_features():
    c2l = CameraToLidar(8, 16)
    pts = torch.randn(40, 8, requires_grad=True)
    img = torch.randn(2, 16, 6, 10, requires_grad=True)
    index = torch.tensor([0, 1, -1, 0] * 10)
    uv = torch.rand(40, 2) * torch.tensor([40.0, 24.0])
    fused, imputation = c2l(pts, img, index, uv, (40, 24))
    imputation.backward(retain_graph=True)
    assert img.grad is None or img.grad.abs().sum() == 0
    assert pts.grad.abs().sum() > 0 and c2l.learner[0].weight.grad.abs().sum() > 0
    fused.sum().backward()
    assert img.grad.abs().sum() > 0  # the fusion itself does use the image features
    l2c = LidarToCamera(8, 16, n_scales=3)
    relu, fused = l2c(img, pts, index, uv, (40, 24))
    assert fused.shape == img.shape and torch.equal(relu, fused.clamp(min=0))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_nuscenes(tmp_path_factory.mktemp("u2mkd") / "nus", frames=2, frames_per_scene=2, image_size=(96, 54),
                         cameras=("CAM_FRONT", "CAM_BACK", "CAM_FRONT_LEFT"))


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    cfg = load_config(REPO / "configs" / "u2mkd" / "synthetic.yaml", SMALL, schema=get_recipe("u2mkd").schema)
    teacher = SparseUNet(4, 16, cfg.model.teacher.backbone)
    save(path, {"models": {"net": teacher.state_dict()}})
    return path


def make_recipe(data, tmp_path, *extra, name="u2mkd"):
    recipe_cls = get_recipe(name)
    cfg = load_config(REPO / "configs" / name / "synthetic.yaml",
                      [f"data.root={data}", f"output_dir={tmp_path}", "data.train_split=mini_train",
                       "data.val_split=mini_train", *SMALL, *extra], schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    return recipe


def test_point_pixel_pairs_survive_the_student_augmentation(data, tmp_path):
    recipe = make_recipe(data, tmp_path, "model.kd=false", "model.camera_drop=1")
    frames = recipe.frames("mini_train")
    frame = frames[0]
    sample = recipe.make_sample(frame, np.random.default_rng(3))
    assert len(sample["images"]) == 2  # 3 cameras, 1 dropped
    raw_xyz = frame.points[sample["raw"], :3]
    assert not np.allclose(sample["xyz"], raw_xyz)  # the student's copy is rotated / scaled
    seen = sample["point_cam"] >= 0
    assert seen.sum() > 50
    # every in-view point's pixel is the projection of its *raw* point into the camera it was assigned to
    for j in np.unique(sample["point_cam"][seen]):
        pts = seen & (sample["point_cam"] == j)
        matches = []
        for name in sorted(frame.cameras):
            cam = frame.cameras[name]
            K = np.diag([96 / cam.image_size[0], 64 / cam.image_size[1], 1.0]) @ cam.K
            proj = project_points(raw_xyz[pts], K, cam.T_cam_lidar, (96, 64))
            matches.append(proj.visible.all() and np.allclose(proj.uv, sample["point_uv"][pts], atol=1e-3))
        assert any(matches)


def test_one_training_step_and_validation(data, teacher_ckpt, tmp_path):
    recipe = make_recipe(data, tmp_path, f"model.teacher.checkpoint={teacher_ckpt}", "model.camera_drop=1")
    recipe.nets["teacher"].eval()
    for p in recipe.nets["teacher"].parameters():
        p.requires_grad_(False)
    ds = recipe.train_dataset()
    batch = recipe.collate([ds[(0, 0)], ds[(0, 1)]])
    assert (batch["kd_index"] >= 0).float().mean() > 0.98  # the teacher sees every student point in its range
    losses = recipe.training_step(batch, 0)
    assert set(losses) == {"ce", "lovasz", "pixel_ce", "pixel_lovasz", "imputation", "kl", "feat"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    student = recipe.nets["student"]
    assert student.lidar.stem[0].weight.grad.abs().sum() > 0
    assert student.camera.backbone.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in recipe.nets["teacher"].parameters())
    for net in recipe.nets.values():
        net.eval()
    metrics = recipe.validate([recipe.collate([recipe.val_dataset()[0]])])
    assert {"miou", "accuracy", "pixel_miou", "miou_drop3"} <= set(metrics)
    assert all(k.startswith("iou_") for k in set(metrics) - {"miou", "accuracy", "pixel_miou", "miou_drop3"})


def test_drop_cameras_and_kd_without_teacher(data, tmp_path):
    recipe = make_recipe(data, tmp_path, "model.kd=false")
    ds = recipe.val_dataset()
    batch = recipe.collate([ds[0], ds[1]])
    student = batch["student"]
    assert len(student["images"]) == 6
    dropped = recipe.drop_cameras(student, 2)
    assert len(dropped["images"]) == 2  # one camera left per sample
    kept = dropped["point_image"] >= 0
    assert kept.sum() < (student["point_image"] >= 0).sum()
    assert torch.equal(dropped["images"][dropped["point_image"][kept]], student["images"][student["point_image"][kept]])
    with pytest.raises(XmkdConfigError, match="teacher.checkpoint"):
        make_recipe(data, tmp_path, "model.kd=true")


def test_camera_only_baseline_trains_and_cannot_label_points_outside_the_cameras(data, tmp_path):
    recipe = make_recipe(data, tmp_path, "model.camera_drop=1", name="camera_seg")
    assert set(recipe.nets) == {"camera"}
    ds = recipe.train_dataset()
    batch = recipe.collate([ds[(0, 0)], ds[(0, 1)]])
    losses = recipe.training_step(batch, 0)
    assert set(losses) == {"ce", "lovasz"}
    sum(losses.values()).backward()
    assert recipe.nets["camera"].backbone.conv1.weight.grad.abs().sum() > 0
    recipe.nets["camera"].eval()
    val = recipe.collate([recipe.val_dataset()[0]])
    pred = recipe.predict(val)
    outside = val["student"]["point_image"] < 0
    assert outside.any() and (pred[outside] == recipe.space.ignore_index).all()
    assert (pred[~outside] < recipe.space.num_classes).all()
    metrics = recipe.validate([val])
    assert 0 < metrics["coverage"] < 1 and metrics["miou"] <= metrics["pixel_miou"] + 1e-6


def test_an_unlabelled_frame_makes_an_evaluation_sample_but_no_training_sample(data, tmp_path):
    """`xmkd predict` on a test split: a frame without point labels gets ignore labels in evaluation; training
    refuses it."""
    import dataclasses

    from xmkd.errors import XmkdDataError

    recipe = make_recipe(data, tmp_path, "model.kd=false")
    frame = recipe.frames("mini_train")[0]
    bare = dataclasses.replace(frame, labels=None)
    labelled, unlabelled = recipe.make_sample(frame, None), recipe.make_sample(bare, None)
    assert np.array_equal(labelled["xyz"], unlabelled["xyz"]) and np.array_equal(labelled["images"],
                                                                                    unlabelled["images"])
    assert (unlabelled["labels"] == recipe.space.ignore_index).all() and len(unlabelled["labels"]) == frame.meta.get(
        "num_keyframe_points", frame.num_points)
    with pytest.raises(XmkdDataError, match="no point labels"):
        recipe.make_sample(bare, np.random.default_rng(0))
