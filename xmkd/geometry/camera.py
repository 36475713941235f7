"""Pinhole camera projection (OpenCV convention: x right, y down, z forward).

A point projects to float (u, v) = (column, row). Its pixel is (row, col) = (floor(v), floor(u)), and it
is visible when depth > `min_depth` and 0 <= u < W and 0 <= v < H (DESIGN.md). `image_size` is always
(W, H), as PIL reports it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from xmkd.geometry.transforms import invert_transform, transform_points

DEFAULT_MIN_DEPTH = 1.0  # metres; nuScenes' devkit default


class Projection(NamedTuple):
    """Result of projecting N points into one camera."""

    uv: np.ndarray  # (N, 2) float (u = column, v = row); meaningless where depth <= 0
    depth: np.ndarray  # (N,) z in the camera frame, metres
    visible: np.ndarray  # (N,) bool: in front (depth > min_depth) and inside the image


def project_points(
    points: np.ndarray,
    K: np.ndarray,
    T_cam_lidar: np.ndarray,
    image_size: tuple[int, int],
    min_depth: float = DEFAULT_MIN_DEPTH,
) -> Projection:
    """Project LiDAR-frame points (N, 3+) into a camera with intrinsics `K` (3, 3).

    Works on numpy arrays and on torch tensors (then every output is a tensor on the points' device).
    """
    cam = transform_points(T_cam_lidar, points[..., :3])
    depth = cam[..., 2]
    if isinstance(points, np.ndarray):
        K = np.asarray(K, dtype=cam.dtype)
        safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
        stack = np.stack
    else:
        import torch

        K = torch.as_tensor(K, dtype=cam.dtype, device=cam.device)
        safe = torch.where(depth.abs() < 1e-9, torch.full_like(depth, 1e-9), depth)
        stack = torch.stack
    uvw = cam @ K.T
    u = uvw[..., 0] / safe
    v = uvw[..., 1] / safe
    w, h = image_size
    visible = (depth > min_depth) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    return Projection(stack([u, v], -1), depth, visible)


def pixel_indices(uv: np.ndarray) -> np.ndarray:
    """(N, 2) float (u, v) -> (N, 2) int64 (row, col) = (floor(v), floor(u))."""
    if isinstance(uv, np.ndarray):
        return np.floor(uv[:, ::-1]).astype(np.int64)
    import torch

    return torch.floor(uv.flip(-1)).long()


def backproject(
    uv: np.ndarray, depth: np.ndarray, K: np.ndarray, T_cam_lidar: np.ndarray
) -> np.ndarray:
    """Pixels (N, 2) float (u, v) with depth (N,) (camera z, metres) -> LiDAR-frame points (N, 3).

    The inverse of `project_points` for points in front of the camera.
    """
    uv = np.asarray(uv, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64)
    rays = np.linalg.solve(np.asarray(K, np.float64), np.vstack([uv.T, np.ones(len(uv))]))  # (3, N), z = 1
    cam = (rays * depth).T
    return transform_points(invert_transform(T_cam_lidar), cam)


def depth_image_to_points(depth: np.ndarray, K: np.ndarray, T_cam_lidar: np.ndarray) -> np.ndarray:
    """Back-project a dense depth image (H, W) (0 or non-finite = no depth) through pixel centres.

    Returns LiDAR-frame points (M, 3) for the M pixels with a valid depth, row-major order.
    """
    rows, cols = np.nonzero(np.isfinite(depth) & (depth > 0))
    uv = np.stack([cols + 0.5, rows + 0.5], axis=1)
    return backproject(uv, depth[rows, cols], K, T_cam_lidar)


def kitti_rect_transform(R0_rect: np.ndarray, Tr_velo_to_cam: np.ndarray) -> np.ndarray:
    """T_rect_velo = R0_rect . Tr_velo_to_cam (4x4): LiDAR -> the rectified reference camera 0, the frame of
    KITTI label locations (not camera 2's frame: that one is 6 cm away, see `kitti_camera`)."""
    r0 = np.eye(4)
    r0[:3, :3] = np.asarray(R0_rect, np.float64).reshape(3, 3)
    tr = np.eye(4)
    tr[:3, :] = np.asarray(Tr_velo_to_cam, np.float64).reshape(-1, 4)[:3]
    return r0 @ tr


def kitti_camera(P: np.ndarray, R0_rect: np.ndarray, Tr_velo_to_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KITTI calibration -> (K, T_cam_lidar) such that K @ T_cam_lidar == P @ R0_rect @ Tr_velo_to_cam.

    `P` is a rectified projection matrix (3, 4) = K [I | t] (t is the stereo baseline offset of that
    camera), `R0_rect` (3, 3) and `Tr_velo_to_cam` (3, 4) or (4, 4). The returned camera frame is the
    rectified frame of camera P (x right, y down, z forward), so depth is metric z in that camera.
    """
    P = np.asarray(P, np.float64).reshape(3, 4)
    K = P[:, :3].copy()
    t = np.linalg.solve(K, P[:, 3])
    offset = np.eye(4)
    offset[:3, 3] = t
    return K, offset @ kitti_rect_transform(R0_rect, Tr_velo_to_cam)
