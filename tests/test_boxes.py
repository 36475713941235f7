import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xmkd.geometry.boxes import (
    alpha_to_rotation_y,
    bev_corners,
    box_corners,
    kitti_camera_to_lidar,
    lidar_to_kitti_camera,
    points_box_index,
    points_in_boxes,
    project_boxes_to_image,
    rotation_y_to_alpha,
)
from xmkd.geometry.transforms import make_transform, quat_to_matrix, wrap_angle

R_CAM_LIDAR = np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])
T_KITTI_LIKE = make_transform(R_CAM_LIDAR, [0.01, -0.08, -0.27])

box_strategy = st.tuples(
    st.floats(-40, 40), st.floats(-40, 40), st.floats(-3, 3),
    st.floats(0.3, 12), st.floats(0.3, 4), st.floats(0.3, 4), st.floats(-np.pi, np.pi),
).map(lambda t: np.array([t]))


def test_corners_of_axis_aligned_box():
    c = box_corners(np.array([[1.0, 2, 3, 4, 2, 1, 0]]))[0]
    assert np.allclose(c[0], [3, 3, 2.5]) and np.allclose(c[6], [-1, 1, 3.5])
    assert np.allclose(c.mean(0), [1, 2, 3])


@given(box_strategy)
def test_corners_rotate_with_yaw_and_bev_is_ccw(box):
    c = box_corners(box)[0]
    assert np.allclose(c.mean(0), box[0, :3])
    heading = c[[0, 1, 4, 5]].mean(0) - box[0, :3]  # centre of the front face
    assert np.allclose(heading[:2], box[0, 3] / 2 * np.array([np.cos(box[0, 6]), np.sin(box[0, 6])]), atol=1e-6)
    bev = bev_corners(box)[0]
    area2 = sum(bev[i, 0] * bev[(i + 1) % 4, 1] - bev[(i + 1) % 4, 0] * bev[i, 1] for i in range(4))
    assert np.isclose(area2 / 2, box[0, 3] * box[0, 4])  # positive signed area: counter-clockwise
    assert np.allclose(box_corners(torch.from_numpy(box)).numpy(), box_corners(box))


@settings(max_examples=80)
@given(box_strategy, st.floats(-0.02, 0.02), st.floats(-0.02, 0.02))
def test_lidar_kitti_camera_round_trip(box, qa, qb):
    T = make_transform(quat_to_matrix([1.0, qa, qb, 0.0]) @ R_CAM_LIDAR, [0.01, -0.08, -0.27])
    T[:3, :3] = quat_to_matrix([1.0, 0, 0, 0]) @ R_CAM_LIDAR  # KITTI's LiDAR z is camera -y
    cam = lidar_to_kitti_camera(box, T)
    back = kitti_camera_to_lidar(cam, T)
    assert np.allclose(back[:, :6], box[:, :6], atol=1e-6)
    assert np.allclose(np.cos(back[:, 6] - box[:, 6]), 1.0, atol=1e-9)


def test_kitti_camera_conventions():
    # A car 10 m ahead, facing +x (driving away): KITTI ry = -pi/2, bottom centre below its centre.
    box = np.array([[10.0, 0, -0.9, 4, 1.8, 1.6, 0]])
    cam = lidar_to_kitti_camera(box, T_KITTI_LIKE)[0]
    assert np.allclose(cam[3:6], [1.6, 1.8, 4])  # h, w, l
    assert np.isclose(wrap_angle(cam[6]), -np.pi / 2)
    assert np.isclose(cam[1], 0.9 + 0.8 - 0.08)  # y down: 1.7 m below the LiDAR, plus the y translation
    assert np.isclose(rotation_y_to_alpha(cam[6], cam[0], cam[2]), wrap_angle(-np.pi / 2 - np.arctan2(cam[0], cam[2])))
    a = rotation_y_to_alpha(np.array([0.3]), np.array([2.0]), np.array([9.0]))
    assert np.allclose(alpha_to_rotation_y(a, 2.0, 9.0), 0.3)


def test_points_in_boxes():
    boxes = np.array([[0.0, 0, 0, 4, 2, 2, np.pi / 2], [10, 0, 0, 1, 1, 1, 0]])
    pts = np.array([[0, 1.9, 0], [1.9, 0, 0], [10.4, 0.4, 0.4], [10.6, 0, 0], [0, 0, 1.1]])
    inside = points_in_boxes(pts, boxes)
    assert inside.tolist() == [[True, False], [False, False], [False, True], [False, False], [False, False]]
    assert points_box_index(pts, boxes).tolist() == [0, -1, 1, -1, -1]
    assert points_box_index(pts, np.zeros((0, 7))).tolist() == [-1] * 5


def test_project_boxes_to_image():
    K = np.array([[500.0, 0, 320], [0, 500, 180], [0, 0, 1]])
    box = np.array([[10.0, 0, 0, 2, 2, 2, 0]])  # spans y, z in [-1, 1] at x in [9, 11]
    bbox, front = project_boxes_to_image(box, K, make_transform(R_CAM_LIDAR, [0, 0, 0]), (640, 360))
    assert front.all()
    assert np.allclose(bbox[0], [320 - 500 / 9, 180 - 500 / 9, 320 + 500 / 9, 180 + 500 / 9])
