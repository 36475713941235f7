"""3D boxes in the LiDAR frame and their KITTI camera-frame form.

LiDAR boxes (OpenPCDet's convention): (M, 7) = (x, y, z, dx, dy, dz, yaw); (x, y, z) is the geometric
centre, dx is the length along the heading, dy the width, dz the height, yaw about +z (0 = facing +x).

KITTI camera boxes, in the column order of a `label_2` line: (M, 7) = (x, y, z, h, w, l, ry); (x, y, z) is
the bottom-face centre in the rectified camera frame (x right, y down, z forward) and ry the rotation
about the camera's y axis (0 = facing camera +x).

Corner order of `box_corners` (local frame, before rotation):
    0 (+,+,-)  1 (+,-,-)  2 (-,-,-)  3 (-,+,-)   bottom face
    4 (+,+,+)  5 (+,-,+)  6 (-,-,+)  7 (-,+,+)   top face       (front face = 0, 1, 5, 4)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xmkd.geometry.camera import project_points
from xmkd.geometry.transforms import invert_transform, transform_points, wrap_angle

_CORNER_SIGNS = np.array(
    [[1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1], [1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 1, 1]],
    dtype=np.float64,
) * 0.5
# Counter-clockwise seen from above (+z), as the polygon routines in `iou` expect.
_BEV_SIGNS = np.array([[1, -1], [1, 1], [-1, 1], [-1, -1]], dtype=np.float64) * 0.5


def _check_boxes(boxes: Any) -> None:
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise ValueError(f"boxes must be (M, 7+) (x, y, z, dx, dy, dz, yaw), got shape {tuple(boxes.shape)}")


def box_corners(boxes: Any) -> Any:
    """LiDAR boxes (M, 7) -> corners (M, 8, 3) in the order of the module docstring (numpy or torch)."""
    _check_boxes(boxes)
    if isinstance(boxes, np.ndarray):
        signs = _CORNER_SIGNS
        c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
        local = signs[None] * boxes[:, None, 3:6]
        x = local[..., 0] * c[:, None] - local[..., 1] * s[:, None]
        y = local[..., 0] * s[:, None] + local[..., 1] * c[:, None]
        return np.stack([x, y, local[..., 2]], -1) + boxes[:, None, :3]
    import torch

    signs = torch.as_tensor(_CORNER_SIGNS, dtype=boxes.dtype, device=boxes.device)
    c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    local = signs[None] * boxes[:, None, 3:6]
    x = local[..., 0] * c[:, None] - local[..., 1] * s[:, None]
    y = local[..., 0] * s[:, None] + local[..., 1] * c[:, None]
    return torch.stack([x, y, local[..., 2]], -1) + boxes[:, None, :3]


def bev_corners(boxes: Any) -> Any:
    """LiDAR boxes (M, 7) (or BEV boxes (M, 5) = x, y, dx, dy, yaw) -> (M, 4, 2) counter-clockwise corners."""
    if boxes.shape[-1] >= 7:
        cx, cy, dx, dy, yaw = boxes[:, 0], boxes[:, 1], boxes[:, 3], boxes[:, 4], boxes[:, 6]
    else:
        cx, cy, dx, dy, yaw = (boxes[:, i] for i in range(5))
    if isinstance(boxes, np.ndarray):
        signs, cos, sin, stack = _BEV_SIGNS, np.cos, np.sin, np.stack
    else:
        import torch

        signs = torch.as_tensor(_BEV_SIGNS, dtype=boxes.dtype, device=boxes.device)
        cos, sin, stack = torch.cos, torch.sin, torch.stack
    lx = signs[None, :, 0] * dx[:, None]
    ly = signs[None, :, 1] * dy[:, None]
    c, s = cos(yaw)[:, None], sin(yaw)[:, None]
    return stack([cx[:, None] + lx * c - ly * s, cy[:, None] + lx * s + ly * c], -1)


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(N, N_boxes) bool: point n lies inside box m (boundary included, grown by `margin` metres)."""
    _check_boxes(boxes)
    d = points[:, None, :3].astype(np.float64) - boxes[None, :, :3].astype(np.float64)  # (N, M, 3)
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    lx = d[..., 0] * c + d[..., 1] * s
    ly = -d[..., 0] * s + d[..., 1] * c
    half = boxes[None, :, 3:6] / 2.0 + margin
    return (np.abs(lx) <= half[..., 0]) & (np.abs(ly) <= half[..., 1]) & (np.abs(d[..., 2]) <= half[..., 2])


def points_box_index(points: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(N,) int64 index of the first box containing each point, -1 where none does."""
    if len(boxes) == 0:
        return np.full(len(points), -1, dtype=np.int64)
    inside = points_in_boxes(points, boxes, margin)
    return np.where(inside.any(1), inside.argmax(1), -1).astype(np.int64)


def lidar_to_kitti_camera(boxes: np.ndarray, T_cam_lidar: np.ndarray) -> np.ndarray:
    """LiDAR boxes (M, 7) -> KITTI camera boxes (M, 7) = (x, y, z, h, w, l, ry).

    The bottom centre is the LiDAR box centre lowered by dz/2 and transformed; ry comes from the heading
    vector rotated into the camera and measured about camera y (exact for any rotation whose LiDAR z is
    the camera's -y, as in KITTI).
    """
    _check_boxes(boxes)
    boxes = np.asarray(boxes, dtype=np.float64)
    bottom = boxes[:, :3].copy()
    bottom[:, 2] -= boxes[:, 5] / 2
    loc = transform_points(T_cam_lidar, bottom)
    heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]), np.zeros(len(boxes))], 1)
    h_cam = heading @ np.asarray(T_cam_lidar, np.float64)[:3, :3].T
    ry = np.arctan2(-h_cam[:, 2], h_cam[:, 0])
    return np.concatenate([loc, boxes[:, 5:6], boxes[:, 4:5], boxes[:, 3:4], ry[:, None]], 1)


def kitti_camera_to_lidar(cam_boxes: np.ndarray, T_cam_lidar: np.ndarray) -> np.ndarray:
    """KITTI camera boxes (M, 7) = (x, y, z, h, w, l, ry) -> LiDAR boxes (M, 7); inverse of the above."""
    cam_boxes = np.asarray(cam_boxes, dtype=np.float64).reshape(-1, 7)
    T_lidar_cam = invert_transform(T_cam_lidar)
    bottom = transform_points(T_lidar_cam, cam_boxes[:, :3])
    h, w, l, ry = cam_boxes[:, 3], cam_boxes[:, 4], cam_boxes[:, 5], cam_boxes[:, 6]
    heading_cam = np.stack([np.cos(ry), np.zeros_like(ry), -np.sin(ry)], 1)
    h_lidar = heading_cam @ T_lidar_cam[:3, :3].T
    yaw = np.arctan2(h_lidar[:, 1], h_lidar[:, 0])
    centre = bottom.copy()
    centre[:, 2] += h / 2
    return np.concatenate([centre, l[:, None], w[:, None], h[:, None], yaw[:, None]], 1)


def rotation_y_to_alpha(ry: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """KITTI observation angle: alpha = ry - atan2(x, z), wrapped to [-pi, pi)."""
    return wrap_angle(np.asarray(ry) - np.arctan2(x, z))


def alpha_to_rotation_y(alpha: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Inverse of `rotation_y_to_alpha`."""
    return wrap_angle(np.asarray(alpha) + np.arctan2(x, z))


def project_boxes_to_image(
    boxes: np.ndarray, K: np.ndarray, T_cam_lidar: np.ndarray, image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """2D image boxes (M, 4) = (x1, y1, x2, y2) enclosing each LiDAR box's projected corners, clipped to
    the image, and a (M,) bool mask of boxes with every corner in front of the camera (depth > 0.1 m)."""
    corners = box_corners(np.asarray(boxes, np.float64)).reshape(-1, 3)
    proj = project_points(corners, K, T_cam_lidar, image_size, min_depth=0.1)
    uv = proj.uv.reshape(-1, 8, 2)
    front = (proj.depth.reshape(-1, 8) > 0.1).all(1)
    w, h = image_size
    x1 = np.clip(uv[..., 0].min(1), 0, w - 1)
    y1 = np.clip(uv[..., 1].min(1), 0, h - 1)
    x2 = np.clip(uv[..., 0].max(1), 0, w - 1)
    y2 = np.clip(uv[..., 1].max(1), 0, h - 1)
    return np.stack([x1, y1, x2, y2], 1), front
