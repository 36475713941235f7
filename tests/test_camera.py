import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xmkd.geometry.camera import (
    backproject,
    depth_image_to_points,
    kitti_camera,
    pixel_indices,
    project_points,
)
from xmkd.geometry.transforms import make_transform, quat_to_matrix

K = np.array([[500.0, 0, 320], [0, 500, 180], [0, 0, 1]])
# LiDAR (x fwd, y left, z up) -> camera (x right, y down, z fwd), mounted 1.5 m up and 0.2 m ahead.
R_CAM_LIDAR = np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])
T = make_transform(R_CAM_LIDAR, -R_CAM_LIDAR @ np.array([0.2, 0, 1.5]))


def test_projection_known_point_and_masks():
    pts = np.array([[10.2, 0, 1.5], [10.2, 0, 0.5], [0.5, 0, 1.5], [-10, 0, 1.5], [10.2, 100, 1.5]])
    proj = project_points(pts, K, T, (640, 360))
    assert np.allclose(proj.uv[0], [320, 180])
    assert np.allclose(proj.uv[1], [320, 180 + 500 * 1.0 / 10])  # 1 m lower -> 50 px down
    assert np.allclose(proj.depth[:3], [10, 10, 0.3])
    assert proj.visible.tolist() == [True, True, False, False, False]  # too close, behind, out of image
    assert pixel_indices(proj.uv[:2]).tolist() == [[180, 320], [230, 320]]


def test_projection_torch_matches_numpy():
    pts = np.random.default_rng(1).uniform(-20, 20, size=(200, 4)).astype(np.float32)
    a = project_points(pts, K, T, (640, 360))
    b = project_points(torch.from_numpy(pts), K, T, (640, 360))
    assert np.allclose(a.uv, b.uv.numpy(), atol=1e-3) and np.array_equal(a.visible, b.visible.numpy())
    assert np.array_equal(pixel_indices(a.uv[a.visible]), pixel_indices(b.uv[b.visible]).numpy())


@settings(max_examples=60)
@given(st.floats(0.01, 639.99), st.floats(0.01, 359.99), st.floats(1.01, 80), st.floats(-1, 1), st.floats(-1, 1))
def test_backproject_inverts_project(u, v, depth, qa, qb):
    T_rand = make_transform(quat_to_matrix(np.array([1.0, 0.1 * qa, 0.1 * qb, 0.05])) @ R_CAM_LIDAR, [0.3, -1, 2])
    p = backproject(np.array([[u, v]]), np.array([depth]), K, T_rand)
    proj = project_points(p, K, T_rand, (640, 360))
    assert np.allclose(proj.uv, [[u, v]], atol=1e-6) and np.isclose(proj.depth[0], depth)
    assert proj.visible[0]


def test_depth_image_to_points_lands_on_pixel_centres():
    depth = np.zeros((360, 640), np.float32)
    depth[100, 200] = 12.5
    depth[300, 10] = 3.0
    pts = depth_image_to_points(depth, K, T)
    proj = project_points(pts, K, T, (640, 360))
    assert pixel_indices(proj.uv).tolist() == [[100, 200], [300, 10]]
    assert np.allclose(proj.depth, [12.5, 3.0])


def test_kitti_camera_matches_full_projection_chain():
    P2 = np.array([[721.5, 0, 609.6, 44.86], [0, 721.5, 172.9, 0.2164], [0, 0, 1, 0.002746]])
    R0 = quat_to_matrix(np.array([1.0, 0.004, -0.003, 0.002]))
    Tr = np.hstack([R_CAM_LIDAR, [[0.1], [-0.08], [-0.27]]])
    Kk, Tk = kitti_camera(P2, R0, Tr)
    pts = np.random.default_rng(2).uniform([5, -10, -2], [50, 10, 2], size=(100, 3))
    R0_4 = np.eye(4)
    R0_4[:3, :3] = R0
    Tr_4 = np.vstack([Tr, [0, 0, 0, 1]])
    uvw = (P2 @ R0_4 @ Tr_4 @ np.hstack([pts, np.ones((100, 1))]).T).T
    proj = project_points(pts, Kk, Tk, (1242, 375))
    assert np.allclose(proj.uv, uvw[:, :2] / uvw[:, 2:], atol=1e-6)
    assert np.allclose(np.linalg.det(Tk[:3, :3]), 1.0)


def test_projection_agrees_with_nuscenes_devkit_view_points():
    geometry_utils = pytest.importorskip("nuscenes.utils.geometry_utils")
    rng = np.random.default_rng(3)
    pts = rng.uniform([-30, -30, -2], [30, 30, 3], size=(500, 3))
    cam = (T[:3, :3] @ pts.T + T[:3, 3:4])
    ref = geometry_utils.view_points(cam, K, normalize=True)
    ours = project_points(pts, K, T, (640, 360))
    front = cam[2] > 1.0
    assert np.allclose(ours.uv[front], ref[:2, front].T, atol=1e-6)
    # The devkit's filter is depth > 1 and 1 < u < W - 1, 1 < v < H - 1: ours is the same up to the 1-px border.
    dev = front & (ref[0] > 1) & (ref[0] < 639) & (ref[1] > 1) & (ref[1] < 359)
    assert np.all(ours.visible[dev])
