"""Geometry on the two real sensor frames in ../shared/realdata (KITTI 000008, one nuScenes keyframe)."""

import json

import numpy as np
from PIL import Image

from xmkd.data.readers.kitti_files import read_calib_file, read_label_file
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
