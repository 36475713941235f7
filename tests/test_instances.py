"""Instance database (`xmkd prepare-instances`) and U2MKD's range-matched, azimuth-preserving paste."""

import json

import numpy as np
import pytest
from conftest import tiny_nuscenes

from xmkd.cli import main
from xmkd.data.frame import Frame
from xmkd.data.index import IndexedFrames
from xmkd.data.instances import GROUND, THINGS, InstanceDatabase, InstancePaste, PasteOptions, frame_instances
from xmkd.data.labels import get_label_space

SPACE = get_label_space("nuscenes16")


@pytest.fixture(scope="module")
def nus(tmp_path_factory):
    return tiny_nuscenes(tmp_path_factory.mktemp("inst") / "nus", frames=4, frames_per_scene=2)


@pytest.fixture(scope="module")
def db_dir(nus, tmp_path_factory):
    out = tmp_path_factory.mktemp("db") / "instances"
    assert main(["prepare-instances", "--index", str(nus / "xmkd_index"), "--split", "mini_train", "--out", str(out),
                 "--quiet", "--min-points", "10"]) == 0
    return out


def test_database_holds_thing_instances_with_enough_points(db_dir, nus):
    db = InstanceDatabase.load(db_dir)
    summary = json.loads((db_dir / "database.json").read_text())
    assert len(db) == summary["instances"] > 3
    things = {SPACE.class_names.index(n) for n in THINGS["nuscenes16"]}
    assert set(db.classes.tolist()) <= things
    assert db.counts.min() >= 10 and db.counts.sum() == len(db.points)
    for i in range(len(db)):
        p = db.instance(i)
        assert np.isclose(np.hypot(p[:, 0].mean(), p[:, 1].mean()), db.ranges[i], atol=1e-3)
        assert np.isclose(p[:, 2].min(), db.z_min[i])
    # a second run resumes from its shards and writes the same database
    shard = next((db_dir / "shards").glob("*.npz"))
    stamp = shard.stat().st_mtime_ns
    assert main(["prepare-instances", "--index", str(nus / "xmkd_index"), "--split", "mini_train", "--out",
                 str(db_dir), "--quiet", "--min-points", "10"]) == 0
    assert shard.stat().st_mtime_ns == stamp
    assert np.array_equal(InstanceDatabase.load(db_dir).points, db.points)


def test_instances_come_from_instance_ids_when_a_dataset_has_them():
    pts = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    labels = np.full(100, SPACE.class_names.index("manmade"), np.int64)
    labels[:30] = SPACE.class_names.index("car")
    labels[30:35] = SPACE.class_names.index("pedestrian")
    inst = np.zeros(100, np.int64)
    inst[:30], inst[30:35] = 7, 9
    frame = Frame("f", pts, labels=labels, instance_ids=inst)
    found = frame_instances(frame, SPACE, min_points=10)
    assert [(c, len(i)) for c, i in found] == [(SPACE.class_names.index("car"), 30)]  # the pedestrian is too small


def test_paste_keeps_the_view_and_avoids_collisions(db_dir, nus):
    db = InstanceDatabase.load(db_dir)
    frame = IndexedFrames(nus / "xmkd_index", "mini_train", cameras=())[0]
    xyz, labels = frame.points[:, :3], frame.labels
    opts = PasteOptions(database=str(db_dir), k=4, jitter=0.0, range_tolerance=3.0)
    paste = InstancePaste(db, SPACE, opts)
    total = 0
    for seed in range(5):
        pts, lab, boxes = paste(xyz, labels, np.random.default_rng(seed))
        assert len(pts) == len(lab) <= opts.max_added_points and len(boxes) <= opts.k
        total += len(boxes)
        ground = np.isin(labels, [SPACE.class_names.index(n) for n in GROUND["nuscenes16"]])
        for b in boxes:  # no scan point above the ground inside a pasted footprint
            above = xyz[~ground]
            assert not np.any((above[:, 0] >= b[0]) & (above[:, 0] <= b[2]) & (above[:, 1] >= b[1]) &
                              (above[:, 1] <= b[3]))
        assert set(np.unique(lab).tolist()) <= set(db.classes.tolist())
    assert total >= 5
    # a single instance, no jitter: rigidly moved, at (about) its original range, seen from the same side
    one = InstancePaste(db, SPACE, PasteOptions(database=str(db_dir), k=1, jitter=0.0, range_tolerance=3.0))
    for seed in range(20):
        pts, lab, boxes = one(xyz, labels, np.random.default_rng(seed))
        if len(boxes):
            break
    assert len(boxes) == 1
    i = next(i for i in range(len(db)) if db.counts[i] == len(pts) and  # the pasted one, by its intensities
             np.allclose(np.sort(db.instance(i)[:, 3]), np.sort(pts[:, 3])))
    src = db.instance(i)

    def radial_frame(p):  # points in a frame whose x axis points from the sensor to the centroid
        c = p[:, :2].mean(0)
        a = np.arctan2(c[1], c[0])
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        return (p[:, :2] - c) @ rot

    assert np.allclose(radial_frame(pts), radial_frame(src), atol=1e-2)
    assert abs(np.hypot(*pts[:, :2].mean(0)) - db.ranges[i]) < 3.0 + 1e-3


def test_recipes_paste_only_in_training_and_outside_the_cameras(db_dir, nus, tmp_path):
    from pathlib import Path

    import torch

    from xmkd.config import load_config
    from xmkd.recipes import get_recipe

    configs = Path(__file__).resolve().parents[1] / "configs"
    common = [f"data.root={nus}", f"output_dir={tmp_path}", "data.train_split=mini_train", "model.max_points=0",
              f"model.paste.database={db_dir}", "model.paste.range_tolerance=3.0", "model.augment.rotate=false",
              "model.augment.flip=false", "model.augment.scale=[1.0,1.0]", "model.backbone.cr=0.125",
              "model.one_point_per_voxel=false"]
    for name, extra in (("lidar_seg", []), ("u2mkd", ["model.kd=false", "model.camera_drop=0",
                                                      "data.image_size=[64,36]"])):
        recipe_cls = get_recipe(name)
        cfg = load_config(configs / name / "synthetic.yaml", [*common, *extra], schema=recipe_cls.schema)
        recipe = recipe_cls(cfg, torch.device("cpu"))
        recipe.build()
        frame = recipe.frames("mini_train")[0]
        plain = recipe.make_sample(frame, None)
        n = len(plain["labels"])
        pasted = max((recipe.make_sample(frame, np.random.default_rng(s)) for s in range(5)),
                     key=lambda x: len(x["labels"]))
        extra_points = len(pasted["labels"]) - frame.num_points
        assert extra_points > 0 and n == frame.num_points  # evaluation never pastes
        things = [SPACE.class_names.index(c) for c in THINGS["nuscenes16"]]
        assert np.isin(pasted["labels"][-extra_points:], things).all()
        if name == "u2mkd":
            assert (pasted["point_cam"][-extra_points:] == -1).all()


def test_u2mkd_pastes_before_both_inputs_so_the_teacher_supervises_the_pasted_points(db_dir, nus, tmp_path):
    from pathlib import Path

    import torch

    from xmkd.config import load_config
    from xmkd.engine.checkpoint import save
    from xmkd.models.point.sparse_unet import SparseUNet
    from xmkd.recipes import get_recipe

    recipe_cls = get_recipe("u2mkd")
    overrides = [f"data.root={nus}", f"output_dir={tmp_path}", "data.train_split=mini_train", "model.max_points=0",
                 f"model.paste.database={db_dir}", "model.paste.range_tolerance=3.0", "model.backbone.cr=0.125",
                 "model.teacher.backbone.cr=0.125", "model.camera_drop=0", "data.image_size=[64,36]"]
    config = Path(__file__).resolve().parents[1] / "configs" / "u2mkd" / "synthetic.yaml"
    cfg = load_config(config, overrides, schema=recipe_cls.schema)
    save(tmp_path / "t.pt", {"models": {"net": SparseUNet(4, 16, cfg.model.teacher.backbone).state_dict()}})
    cfg = load_config(config, [*overrides, f"model.teacher.checkpoint={tmp_path / 't.pt'}"], schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    frame = recipe.frames("mini_train")[0]
    sample = max((recipe.make_sample(frame, np.random.default_rng(s)) for s in range(5)), key=lambda x: len(x["raw"]))
    pasted = sample["raw"] >= frame.num_points  # the student's ids: keyframe points, then the pasted ones
    assert pasted.sum() > 0 and (sample["point_cam"][pasted] == -1).all()
    assert set(sample["raw"][pasted]) <= set(sample["t_raw"][sample["t_raw"] >= frame.num_points])  # in the teacher
    kd = recipe.collate([sample])["kd_index"].numpy()
    assert (kd[pasted] >= 0).all()  # so the KL covers them
    # each pair is one physical point: the two copies differ by rotation / flip (norm kept) and by two scale factors
    ratio = np.linalg.norm(sample["xyz"][kd >= 0], axis=1) / np.linalg.norm(sample["t_xyz"][kd[kd >= 0]], axis=1)
    assert ratio.std() < 1e-5 * ratio.mean()
