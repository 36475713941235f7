"""The real sensor frames in ../shared/realdata: geometry of KITTI 000008 and one nuScenes keyframe, two full KITTI
scans (boxes, image sizes, points in view) and a LiDAR-only SemanticKITTI scan (labels, prepare / inspect / viz)."""

import json

import numpy as np
import pytest
from PIL import Image

from xmkd.data.readers.kitti_files import read_calib_file, read_label_file
from xmkd.errors import XmkdDataError
from xmkd.geometry.boxes import (
    kitti_camera_to_lidar,
    lidar_to_kitti_camera,
    points_in_boxes,
    project_boxes_to_image,
    rotation_y_to_alpha,
)
from xmkd.geometry.camera import kitti_camera, kitti_rect_transform, project_points
from xmkd.geometry.transforms import wrap_angle


def kitti_000008(realdata):
    root = realdata / "kitti-object" / "training"
    calib = read_calib_file(root / "calib" / "000008.txt")
    K, T = kitti_camera(calib["P2"], calib["R0_rect"], calib["Tr_velo_to_cam"])
    points = np.fromfile(root / "velodyne" / "000008.bin", np.float32).reshape(-1, 4)
    size = Image.open(root / "image_2" / "000008.png").size
    return calib, K, T, points, size, read_label_file(root / "label_2" / "000008.txt")


def rect_transform(calib):
    return kitti_rect_transform(calib["R0_rect"], calib["Tr_velo_to_cam"])


def test_kitti_every_point_projects_inside_the_image(realdata):
    calib, K, T, points, size, _ = kitti_000008(realdata)
    assert size == (1242, 375) and len(points) == 17238
    proj = project_points(points, K, T, size, min_depth=0.0)
    assert proj.visible.all()
    # Same as the devkit's chain P2 . R0_rect . Tr_velo_to_cam written out by hand.
    r0 = np.eye(4)
    r0[:3, :3] = calib["R0_rect"]
    tr = np.vstack([calib["Tr_velo_to_cam"], [0, 0, 0, 1]])
    uvw = (calib["P2"] @ r0 @ tr @ np.hstack([points[:, :3], np.ones((len(points), 1))]).T).T
    assert np.allclose(proj.uv, uvw[:, :2] / uvw[:, 2:], atol=1e-3)


def test_kitti_car_boxes_match_their_2d_labels(realdata):
    calib, K, T, points, size, objects = kitti_000008(realdata)
    assert (objects.names == "Car").sum() == 6 and (objects.names == "DontCare").sum() == 4
    cars = objects.names == "Car"
    boxes = kitti_camera_to_lidar(objects.camera_boxes[cars], rect_transform(calib))
    # KITTI's Tr tilts LiDAR z by ~0.6 deg from camera -y, so the round trip is exact to ~1e-4 only.
    assert np.allclose(lidar_to_kitti_camera(boxes, rect_transform(calib)), objects.camera_boxes[cars], atol=1e-3)
    bbox, in_front = project_boxes_to_image(boxes, K, T, size)
    assert in_front.all()
    label = objects.bbox[cars]
    err = np.abs(bbox - label).max(1)
    # Within a pixel or so (the labels' 2D boxes are the projected 3D boxes, clipped to the image).
    assert np.all(err <= 1.5), err
    alpha = rotation_y_to_alpha(objects.rotation_y[cars], objects.location[cars, 0], objects.location[cars, 2])
    assert np.all(np.abs(wrap_angle(alpha - objects.alpha[cars])) < 0.04)
    # Each car holds LiDAR points, and they are above the ground plane of its box.
    inside = points_in_boxes(points, boxes, margin=0.05)
    assert np.all(inside.sum(0) > 20)


def test_nuscenes_frame_projects_into_its_six_cameras(realdata):
    root = realdata / "nuscenes-frame"
    meta = json.loads((root / "frame.json").read_text())
    points = np.fromfile(root / meta["lidar_file"], np.float32).reshape(-1, 5)
    assert len(points) == 34688 and len(meta["cameras"]) == 6
    counts = {}
    for name, cam in meta["cameras"].items():
        image = Image.open(root / cam["image_file"])
        assert image.size == (cam["width"], cam["height"]) == (1600, 900)
        proj = project_points(points, np.array(cam["cam2img"]), np.array(cam["lidar2cam"]), image.size)
        counts[name] = int(proj.visible.sum())
    assert 2500 <= counts["CAM_FRONT"] <= 3500, counts
    assert all(c > 1000 for c in counts.values()), counts
    # Neighbouring cameras overlap only a little: the views cover at most ~15 % of points twice.
    assert sum(counts.values()) < 1.15 * len(points)


# -- kitti-object-full (two full 360-degree scans, two image sizes) and semantickitti-scan (LiDAR only) -------------


def test_kitti_full_scans_boxes_sizes_and_points_in_view(realdata, capsys):
    from xmkd.cli import main
    from xmkd.data.index import inspect
    from xmkd.data.readers import make_reader

    root = realdata / "kitti-object-full"
    info = inspect("kitti_object", root)
    assert info["frames"] == 2 and info["bad"] == []
    assert info["points_per_frame"]["min"] == 115384 and info["points_per_frame"]["max"] == 120268
    assert info["cameras"] == {"image_2": {"1224x370": 1, "1242x375": 1}}  # KITTI's images are not all 1242x375
    # 000000: one Pedestrian; 000001: Truck, Car, Cyclist and four DontCare regions (the label file's lines).
    assert info["boxes_per_class"] == {"Car": 1, "Cyclist": 1, "DontCare": 4, "Pedestrian": 1, "Truck": 1}
    assert main(["inspect", "kitti_object", "--root", str(root)]) == 0
    assert "image_2  1224x370 (1 frames), 1242x375 (1 frames)" in capsys.readouterr().out
    reader = make_reader("kitti_object", root)
    for rec, names in zip(reader.records(), (["Pedestrian"], ["Truck", "Car", "Cyclist"])):
        frame = reader.load(reader.check(rec))
        cam = frame.cameras["image_2"]
        # In view with P2 . R0_rect . Tr_velo_to_cam, written out by hand, and through the reader's camera.
        calib = read_calib_file(root / "training" / "calib" / f"{rec['id']}.txt")
        r0 = np.eye(4)
        r0[:3, :3] = calib["R0_rect"]
        tr = np.vstack([calib["Tr_velo_to_cam"], [0, 0, 0, 1]])
        uvw = (calib["P2"] @ r0 @ tr @ np.hstack([frame.points[:, :3], np.ones((frame.num_points, 1))]).T).T
        u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
        w, h = cam.image_size
        by_hand = int(((uvw[:, 2] > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)).sum())
        seen = int(project_points(frame.points, cam.K, cam.T_cam_lidar, cam.image_size, min_depth=0).visible.sum())
        assert seen == by_hand and 18600 <= seen <= 20300, (rec["id"], seen, by_hand)
        assert frame.boxes.names.tolist() == names
        # Each labelled object holds LiDAR points of the full scan.
        assert np.all(points_in_boxes(frame.points, frame.boxes.boxes, margin=0.05).sum(0) >= 5)


# SemanticKITTI scan 07/000964, raw id -> points (realdata/README.md), mapped by hand with semantic-kitti.yaml's
# learning_map: 0, 1, 52, 99 -> ignore; 10 car + 252 moving-car -> car.
SCAN_964_CLASSES = {"building": 37840, "sidewalk": 19952, "road": 17066, "vegetation": 16304, "fence": 14275,
                    "car": 10400 + 1110, "ignore": 1767 + 58 + 7 + 80, "terrain": 907, "pole": 444,
                    "traffic-sign": 137, "truck": 124, "trunk": 14}


def test_semantickitti_scan_lidar_only(realdata, tmp_path, capsys):
    import json

    from xmkd.cli import main
    from xmkd.data.index import IndexedFrames, load_index

    root = str(realdata / "semantickitti-scan")
    # With cameras, the scan needs calib.txt (and image_2/), which this labels-only layout does not have.
    assert main(["prepare", "semantickitti", "--root", root, "--out", str(tmp_path / "with"), "--quiet"]) == 1
    assert "sequences/07/calib.txt: calibration file is missing" in capsys.readouterr().err
    assert main(["prepare", "semantickitti", "--root", root, "--out", str(tmp_path / "idx"), "--cameras", "none",
                 "--quiet"]) == 0
    assert "indexed 1 frames" in capsys.readouterr().out
    index = load_index(tmp_path / "idx")
    assert [r["id"] for r in index["frames"]] == ["07/000964"] and index["frames"][0]["cameras"] == {}
    raw = {int(k): v for k, v in index["frames"][0]["stats"]["labels"].items()}
    assert raw == {0: 1767, 1: 58, 10: 10400, 18: 124, 40: 17066, 48: 19952, 50: 37840, 51: 14275, 52: 7,
                   70: 16304, 71: 14, 72: 907, 80: 444, 81: 137, 99: 80, 252: 1110}
    assert main(["inspect", "semantickitti", "--root", root, "--cameras", "none", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["label_histogram"] == SCAN_964_CLASSES and sum(SCAN_964_CLASSES.values()) == 120485
    assert info["frames"] == 1 and info["points_per_frame"]["max"] == 120485 and info["cameras"] == {}
    assert info["splits"] == {"train": 1, "xmuda_val": 1}  # sequence 07 in the official and xMUDA splits
    frame = IndexedFrames(tmp_path / "idx", "train")[0]
    assert frame.cameras == {} and frame.ego_pose is None and frame.num_points == 120485
    assert len(np.unique(frame.instance_ids[frame.instance_ids > 0])) == 15  # README: 15 distinct instances
    assert main(["viz", "semantickitti", "--root", root, "--cameras", "none", "--out", str(tmp_path / "viz")]) == 0
    assert [p.name for p in (tmp_path / "viz").iterdir()] == ["07_000964_bev.png"]
    # Multi-scan input needs the poses (and calib.txt's Tr to turn them into LiDAR poses): a clear error, not a crash.
    with pytest.raises(XmkdDataError, match="sweeps=2 merges scans through poses.txt and calib.txt's Tr.*"
                                            "calib.txt, poses.txt missing"):
        IndexedFrames(tmp_path / "idx", "train", sweeps=2)[0]


def test_viz_bird_eye_view_holds_every_box_and_names_what_it_leaves_out(realdata, tmp_path, capsys):
    from xmkd.cli import main
    from xmkd.data.frame import Boxes, Frame
    from xmkd.viz.frame import bev_extent, bev_outside

    # kitti-object-full 000001: the Truck's box reaches 76 m, the Car is at 61 m (LiDAR frame, x-y distance).
    root = str(realdata / "kitti-object-full")
    assert main(["viz", "kitti_object", "--root", root, "--frame", "000001", "--out", str(tmp_path / "a")]) == 0
    assert "the bird's-eye view spans +-80 m to hold every box" in capsys.readouterr().err
    assert main(["viz", "kitti_object", "--root", root, "--frame", "000001", "--extent", "50", "--out",
                 str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "the bird's-eye view shows +-50 m; outside it: 1187 of 120268 points (out to 79 m), Truck at 70 m, " \
           "Car at 61 m (--extent METRES widens it)" in err
    frame = Frame("f", np.array([[1.0, 2.0, 0.0, 0.5]], np.float32),
                  boxes=Boxes(np.array([[10.0, 0, 0, 4, 2, 1.5, 0]]), np.array(["Car"])))
    assert bev_extent(frame) == 50.0 and bev_outside(frame, 50.0) is None
    pred = np.array([[0.0, -53.0, 0, 4, 2, 1.5, 0.3]])
    assert bev_extent(frame, pred) == 60.0 and bev_outside(frame, 50.0, pred).endswith("prediction at 53 m")
