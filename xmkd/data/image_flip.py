"""The horizontal image + point cloud + box flip of the CMKD / HSRDN student (`random_image_pc_flip` along
'horizontal' in the releases, `pcdet/datasets/augmentor/augmentor_utils.py:144-211`).

The image is mirrored left-right; every 3D point and box centre is moved so that it projects to the mirrored pixel,
u -> W - u, at the same camera depth (pixel j covers [j, j + 1), so `np.fliplr` sends it to [W - j - 1, W - j)). In
the camera frame that is the linear map A = K^-1 F K with F = [[-1, 0, W], [0, 1, 0], [0, 0, 1]]: a reflection when
the principal point is at W / 2, a reflection with a small shear otherwise. Headings are mapped by the same linear
part, so a box's axis follows the flipped image (`heading="image"`); the releases negate the LiDAR yaw
(`heading="negate"`), the same map only when the principal point is at W / 2 and the camera's x axis is the LiDAR's
-y: on KITTI's calibrations (principal point ~11 px left of W / 2) the two differ by up to 1.8 degrees.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xmkd.data.frame import Frame
from xmkd.geometry.transforms import transform_points


def image_flip_transform(K: np.ndarray, T_cam_lidar: np.ndarray, width: int) -> np.ndarray:
    """(4, 4) LiDAR-frame transform of the flip of an image `width` pixels wide: a LiDAR point p goes to M p, whose
    pixel is (W - u, v) at the depth of p (K (3, 3), T_cam_lidar (4, 4) LiDAR -> camera)."""
    F = np.array([[-1.0, 0, width], [0, 1, 0], [0, 0, 1]])
    A = np.eye(4)
    A[:3, :3] = np.linalg.inv(K) @ F @ K
    return np.linalg.inv(T_cam_lidar) @ A @ T_cam_lidar


HEADINGS = ("image", "negate")


def flip_boxes(boxes: np.ndarray, M: np.ndarray, heading: str = "image") -> np.ndarray:
    """LiDAR boxes (N, 7) under the flip transform M (4, 4): centres mapped, sizes kept, headings mapped by M's
    linear part ("image") or negated ("negate", the releases' `aug_gt_boxes[:, 6] = -1 * ...`,
    augmentor_utils.py:183-192)."""
    if heading not in HEADINGS:
        raise ValueError(f"flip heading: expected one of {HEADINGS}, got {heading!r}")
    out = boxes.astype(np.float64).copy()
    if not len(out):
        return out.astype(boxes.dtype)
    out[:, :3] = transform_points(M, out[:, :3])
    if heading == "negate":
        out[:, 6] = -out[:, 6]
    else:
        axis = np.stack([np.cos(out[:, 6]), np.sin(out[:, 6]), np.zeros(len(out))], 1) @ M[:3, :3].T
        out[:, 6] = np.arctan2(axis[:, 1], axis[:, 0])
    return out.astype(boxes.dtype)


def flip_frame(frame: Frame, camera: str, heading: str = "image") -> Frame:
    """`frame` seen through camera `camera` mirrored left-right: its image (and per-pixel labels / depth), points and
    boxes (headings as `flip_boxes` maps them). Only that camera is kept (the flip is defined by its calibration);
    the boxes' 2D attributes (KITTI `bbox`, `alpha`) are left as they were (training reads the 3D boxes only)."""
    cam = frame.cameras[camera]
    M = image_flip_transform(cam.K, cam.T_cam_lidar, cam.image_size[0])
    mirrored = {k: None if v is None else np.ascontiguousarray(v[:, ::-1])
                for k, v in (("image", cam.image), ("labels", cam.labels), ("depth", cam.depth))}
    boxes = frame.boxes
    if boxes is not None:
        boxes = dataclasses.replace(boxes, boxes=flip_boxes(boxes.boxes, M, heading))
    return dataclasses.replace(frame, points=transform_points(M, frame.points),
                               cameras={camera: dataclasses.replace(cam, **mirrored)}, boxes=boxes,
                               meta={**frame.meta, "flipped": True})
