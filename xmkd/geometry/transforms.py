"""Rigid transforms and quaternions.

Quaternions use nuScenes' (and pyquaternion's) order **(w, x, y, z)**. Transforms are 4x4 homogeneous
matrices `T_a_b` that map points expressed in frame b into frame a: `p_a = T_a_b @ p_b`.
Functions taking points accept numpy arrays or torch tensors and return the same kind.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

Array = TypeVar("Array")  # np.ndarray or torch.Tensor


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) (..., 4) in (w, x, y, z) order -> rotation matrices (..., 3, 3).

    The quaternion is normalised first, as pyquaternion does.
    """
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # a non-finite or zero q gives NaN, which readers report
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    r = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )
    return r.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(r: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> unit quaternion (4,) in (w, x, y, z) order with w >= 0.

    Uses the numerically stable branch on the largest diagonal term (Shepperd's method).
    """
    r = np.asarray(r, dtype=np.float64)
    if r.shape != (3, 3):
        raise ValueError(f"matrix_to_quat expects a (3, 3) matrix, got {r.shape}")
    tr = np.trace(r)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q = q / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of (w, x, y, z) quaternions (rotation b first, then a)."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 transform from a rotation (3x3 matrix or (w, x, y, z) quaternion) and a translation (3,)."""
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.shape == (4,):
        rotation = quat_to_matrix(rotation)
    if rotation.shape != (3, 3):
        raise ValueError(f"rotation must be (3, 3) or a (4,) quaternion, got {rotation.shape}")
    t = np.eye(4)
    t[:3, :3] = rotation
    t[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return t


def invert_transform(t: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform, using R^T rather than a general matrix inverse."""
    t = np.asarray(t, dtype=np.float64)
    inv = np.eye(4)
    inv[:3, :3] = t[:3, :3].T
    inv[:3, 3] = -t[:3, :3].T @ t[:3, 3]
    return inv


def transform_points(t: Array, points: Array) -> Array:
    """Apply a 4x4 transform to points (N, 3+); extra columns (intensity, ...) pass through unchanged.

    Works for numpy arrays and torch tensors; the result has the dtype of `points`.
    """
    xyz = points[..., :3]
    rot = t[:3, :3]
    trans = t[:3, 3]
    if isinstance(points, np.ndarray):
        out_xyz = (xyz.astype(np.float64) @ np.asarray(rot, np.float64).T + np.asarray(trans, np.float64))
        out = points.copy()
        out[..., :3] = out_xyz.astype(points.dtype)
        return out
    rot = rot.to(points.dtype) if hasattr(rot, "to") else _torch().as_tensor(rot, dtype=points.dtype)
    trans = trans.to(points.dtype) if hasattr(trans, "to") else _torch().as_tensor(trans, dtype=points.dtype)
    out_xyz = xyz @ rot.T + trans
    return _torch().cat([out_xyz, points[..., 3:]], dim=-1)


def rotation_z(yaw: float) -> np.ndarray:
    """Rotation matrix (3, 3) about +z by `yaw` radians (counter-clockwise seen from above)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def wrap_angle(angle: Array) -> Array:
    """Wrap angles to [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _torch():
    import torch

    return torch
