"""gt-sampling (SECOND's database augmentation) on small hand-made scenes and on the real KITTI frame: the database
holds each box's points, the sampler respects the per-class counts, the min-points and difficulty filters, never lets
boxes collide, brings each box's points along and clears the scene's points inside it."""

import shutil

import numpy as np
import pytest

from xmkd.cli import main
from xmkd.data.frame import Boxes, Frame
from xmkd.data.gt_database import (
    BoxDatabase,
    GTSampler,
    GTSamplingConfig,
    build_box_database,
    kitti_difficulty,
    put_on_road_plane,
)
from xmkd.errors import XmkdDataError
from xmkd.geometry.boxes import points_in_boxes
from xmkd.geometry.iou import bev_iou


def box_points(box, n, rng):
    """n points spread inside a LiDAR box (x, y, z, dx, dy, dz, yaw)."""
    local = rng.uniform(-0.3, 0.3, (n, 3)) * box[3:6]
    c, s = np.cos(box[6]), np.sin(box[6])
    xy = local[:, :2] @ np.array([[c, s], [-s, c]])
    return np.column_stack([xy + box[:2], local[:, 2] + box[2]])


def make_frame(fid, boxes, names, counts, rng, attrs=None):
    pts = [box_points(b, n, rng) for b, n in zip(boxes, counts)] + [rng.uniform([0, -20, -2], [40, 20, -1.9], (200, 3))]
    xyz = np.concatenate(pts)
    points = np.column_stack([xyz, rng.random(len(xyz))]).astype(np.float32)
    return Frame(fid, points, boxes=Boxes(np.asarray(boxes, np.float32), np.asarray(names), attributes=attrs or {}))


def car(x, y, yaw=0.0):
    return [x, y, -1.0, 3.9, 1.6, 1.5, yaw]


def database(tmp_path, rng):
    """A database from two frames: Cars in a row along y = 0 (the first two touching), Pedestrians, one Cyclist
    with too few points, one Car with 3 points, one Car of no KITTI difficulty."""
    f1 = make_frame("000001", [car(5, 0), car(8.5, 0), car(14, 0, 0.3), car(20, 0), [6, 5, -1, 0.8, 0.6, 1.7, 0]],
                    ["Car", "Car", "Car", "Car", "Pedestrian"], [30, 30, 3, 40, 12], rng,
                    {"bbox": np.array([[0, 0, 50, 60]] * 4 + [[0, 0, 10, 30]], float),
                     "truncation": np.zeros(5), "occlusion": np.array([0, 0, 0, 3, 1])})
    f2 = make_frame("000002", [car(30, 0), [10, -6, -1, 1.76, 0.6, 1.7, 0], [12, 6, -1, 0.8, 0.6, 1.7, 0]],
                    ["Car", "Cyclist", "Pedestrian"], [25, 2, 9], rng,
                    {"bbox": np.array([[0, 0, 50, 60], [0, 0, 20, 40], [0, 0, 10, 40]], float),
                     "truncation": np.zeros(3), "occlusion": np.zeros(3)})
    summary = build_box_database([f1, f2], tmp_path / "db", progress=False)
    return summary, BoxDatabase.load(tmp_path / "db"), (f1, f2)


def test_database_holds_each_box_with_its_points(tmp_path):
    rng = np.random.default_rng(0)
    summary, db, (f1, _) = database(tmp_path, rng)
    assert summary["per_class"] == {"Car": 5, "Cyclist": 1, "Pedestrian": 2} and len(db) == 8
    assert db.counts.tolist()[:5] == [30, 30, 3, 40, 12]  # the background points lie outside every box
    k = 1  # the second Car of frame 1: its points, relative to its centre, as they were in the scan
    inside = points_in_boxes(f1.points[:, :3], f1.boxes.boxes[k:k + 1])[:, 0]
    assert np.allclose(db.box_points(k)[:, :3] + db.boxes[k, :3], f1.points[inside, :3], atol=1e-5)
    assert np.allclose(db.box_points(k)[:, 3], f1.points[inside, 3])
    assert db.difficulty.tolist() == [0, 0, 0, -1, 1, 0, 0, 0]  # occlusion 3: no KITTI level
    assert db.frames.tolist()[:2] == ["000001", "000001"]
    (tmp_path / "db" / "boxes.npz").unlink()  # the shards stay: a rebuild resumes from them
    assert build_box_database([], tmp_path / "other", progress=False)["boxes"] == 0
    with pytest.raises(XmkdDataError, match="prepare-instances --boxes"):
        BoxDatabase.load(tmp_path / "db")


def test_kitti_difficulty_follows_the_release_levels():
    # height (px), truncation, occlusion -> 0 easy, 1 moderate, 2 hard, -1 none
    rows = [(40, 0.15, 0, 0), (39, 0.0, 0, 1), (40, 0.16, 0, 1), (25, 0.3, 1, 1), (25, 0.31, 1, 2), (25, 0.5, 2, 2),
            (24, 0.0, 0, -1), (30, 0.51, 0, -1), (30, 0.0, 3, -1)]
    h, t, o, want = (np.array(c) for c in zip(*rows))
    assert kitti_difficulty(h, t, o).tolist() == want.tolist()


def sampled(scene_boxes, scene_names, cfg, db, seed):
    rng = np.random.default_rng(seed)
    scene_pts = np.column_stack([rng.uniform([0, -20, -2], [40, 20, 0], (3000, 3)), rng.random(3000)]).astype(
        np.float32)
    pts, boxes, names = GTSampler(db, cfg)(scene_pts, np.asarray(scene_boxes, np.float32).reshape(-1, 7),
                                           np.asarray(scene_names, dtype=str), rng)
    return scene_pts, pts, boxes, names


def test_sampler_counts_filters_and_collisions(tmp_path):
    _, db, _ = database(tmp_path, np.random.default_rng(0))
    cfg = GTSamplingConfig(sample_groups={"Car": 3, "Pedestrian": 2, "Cyclist": 1},
                           min_points={"Car": 5, "Pedestrian": 5, "Cyclist": 5})
    scene = [car(20.5, 0.5)]  # overlaps the database Car at x = 20: that one can never be placed
    seen_cars = set()
    for seed in range(30):
        scene_pts, pts, boxes, names = sampled(scene, ["Car"], cfg, db, seed)
        new, new_names = boxes[1:].astype(np.float64), names[1:]
        # counts: 3 Cars minus the scene's one; 2 Pedestrians; the only Cyclist has 2 < 5 points
        assert (new_names == "Car").sum() <= 2 and (new_names == "Pedestrian").sum() <= 2
        assert "Cyclist" not in new_names
        # no collisions, with the scene's box or among the sampled ones
        all_boxes = boxes.astype(np.float64)
        iou = bev_iou(all_boxes, all_boxes)
        np.fill_diagonal(iou, 0)
        assert iou.max() == 0
        # filters: the 3-point Car (min points) and the occluded Car at x = 20 (difficulty -1, and colliding)
        for b, n in zip(new, new_names):
            k = int(np.nonzero((np.abs(db.boxes - b).max(1) < 1e-5) & (db.names == n))[0][0])
            assert db.counts[k] >= 5 and db.difficulty[k] != -1
            seen_cars.add(k) if n == "Car" else None
            # the box's points come along, at its position
            assert (np.abs(pts[:, None, :3] - (db.box_points(k)[:, :3] + b[:3])[None]).max(-1) < 1e-5).any(0).all()
        # the scene's points inside a sampled box are gone; all others stay
        inside_new = points_in_boxes(scene_pts[:, :3], new).any(1) if len(new) else np.zeros(len(scene_pts), bool)
        assert len(pts) == (~inside_new).sum() + sum(int(db.counts[np.nonzero(
            np.abs(db.boxes - b).max(1) < 1e-5)[0][0]]) for b in new)
    # the Cars at x = 5 and 8.5 touch (3.9 m boxes 3.5 m apart) so they are never placed together; x = 30 always
    # fits; the Car at x = 14 has 3 points and the one at x = 20 no difficulty, so only 0, 1, 5 ever appear
    assert seen_cars <= {0, 1, 5} and seen_cars >= {5}


def test_sampler_limits_the_whole_scene_and_tops_up_exactly(tmp_path):
    _, db, _ = database(tmp_path, np.random.default_rng(0))
    cfg = GTSamplingConfig(sample_groups={"Car": 2}, min_points={"Car": 5})
    # the scene already holds 2 Cars (far from the database's): nothing to add
    _, pts, boxes, names = sampled([car(5, 15), car(5, -15)], ["Car", "Car"], cfg, db, 0)
    assert len(boxes) == 2 and len(pts) == 3000
    # one Car in the scene: exactly one more (three candidates fit, one is drawn)
    _, _, boxes, names = sampled([car(5, 15)], ["Car"], cfg, db, 0)
    assert names.tolist() == ["Car", "Car"]
    # without the limit: 2 more, unless the two drawn collide (then both are rejected, as released)
    lim = GTSamplingConfig(sample_groups={"Car": 2}, min_points={"Car": 5}, limit_whole_scene=False)
    sizes = {len(sampled([car(5, 15)], ["Car"], lim, db, s)[2]) for s in range(20)}
    assert sizes == {1, 3}


def test_sampled_boxes_move_onto_the_road_plane(tmp_path):
    _, db, _ = database(tmp_path, np.random.default_rng(0))
    T = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)  # LiDAR -> camera (x fwd)
    plane = np.array([0.0, -1.0, 0.0, 1.6])  # camera y = 1.6 (down): the road 1.6 m below the LiDAR, normal up
    shift = put_on_road_plane(db.boxes.astype(np.float64), plane, T)
    assert np.allclose(db.boxes[:, 2] - db.boxes[:, 5] / 2 - shift, -1.6, atol=1e-5)
    cfg = GTSamplingConfig(sample_groups={"Car": 3}, min_points={"Car": 5})
    rng = np.random.default_rng(3)
    pts, boxes, _ = GTSampler(db, cfg)(np.zeros((0, 4), np.float32), np.zeros((0, 7), np.float32),
                                       np.zeros(0, str), rng, plane, T)
    assert len(boxes) and np.allclose(boxes[:, 2] - boxes[:, 5] / 2, -1.6, atol=1e-5)
    assert points_in_boxes(pts[:, :3], boxes.astype(np.float64), margin=1e-4).any(1).all()  # points moved too


def test_prepare_instances_boxes_on_the_real_kitti_frame(realdata, tmp_path, capsys):
    from xmkd.data.index import IndexedFrames, prepare

    root = tmp_path / "kitti"
    shutil.copytree(realdata / "kitti-object", root)
    (root / "training" / "planes").mkdir()
    (root / "training" / "planes" / "000008.txt").write_text(
        "# Matrix\nWIDTH 4\nHEIGHT 1\n-7.051729e-03 -9.997791e-01 -1.980151e-02 1.680367e+00\n")
    prepare("kitti_object", root, root / "xmkd_index", progress=False)
    split = "training"  # no ImageSets: the frames of training/
    assert main(["prepare-instances", "--boxes", "--index", str(root / "xmkd_index"), "--split", split, "--out",
                 str(tmp_path / "db"), "--quiet"]) == 0
    assert "6 boxes" in capsys.readouterr().out
    db = BoxDatabase.load(tmp_path / "db")
    assert db.names.tolist() == ["Car"] * 6 and (db.counts > 0).sum() >= 5
    frame = IndexedFrames(root / "xmkd_index", split, cameras=())[0]
    assert np.allclose(frame.meta["road_plane"], [-7.051729e-03, -9.997791e-01, -1.980151e-02, 1.680367], atol=1e-4)
    assert main(["prepare-instances", "--boxes", "--min-points", "5", "--index", str(root / "xmkd_index"), "--split",
                 split, "--out", str(tmp_path / "db2")]) == 2
