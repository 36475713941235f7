"""The data contract: every reader yields `Frame`s, every recipe consumes batches collated from them.

Construction validates shapes, dtypes and finite values and raises `XmkdDataError` naming the frame
(its `source`, usually the file it came from) and the offending field, so bad data fails where it enters,
not deep inside a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xmkd.errors import XmkdDataError


def _fail(source: str, name: str, message: str) -> XmkdDataError:
    return XmkdDataError(message, source=source, field=name)


def _check_array(
    source: str,
    name: str,
    value: Any,
    dtype: type | tuple[type, ...],
    shape: tuple[int | None, ...],
    finite: bool = False,
) -> np.ndarray:
    """Check `value` is an ndarray of `dtype` whose shape matches `shape` (None = any size)."""
    if not isinstance(value, np.ndarray):
        raise _fail(source, name, f"expected a numpy array, got {type(value).__name__}")
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if value.dtype.type not in dtypes:
        want = " or ".join(np.dtype(d).name for d in dtypes)
        raise _fail(source, name, f"expected dtype {want}, got {value.dtype.name}")
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise _fail(source, name, f"expected shape {want}, got {tuple(value.shape)}")
    if finite and value.size and not np.isfinite(value).all():
        bad_rows = ~np.isfinite(value).reshape(value.shape[0], -1).all(axis=1)
        first = int(np.argmax(bad_rows))
        raise _fail(source, name, f"{int(bad_rows.sum())} rows contain NaN or Inf (first: row {first})")
    return value


def _check_transform(source: str, name: str, value: Any) -> np.ndarray:
    value = _check_array(source, name, value, (np.float64, np.float32), (4, 4), finite=True)
    if not np.allclose(value[3], [0, 0, 0, 1]):
        raise _fail(source, name, f"last row must be [0, 0, 0, 1], got {value[3].tolist()}")
    rot = value[:3, :3].astype(np.float64)
    if not np.allclose(rot @ rot.T, np.eye(3), atol=1e-4):
        raise _fail(source, name, "rotation part is not orthonormal")
    return value


@dataclass
class CameraView:
    """One camera of a frame: image, calibration and optional dense labels / depth."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    K: np.ndarray  # (3, 3) float64 intrinsics
    T_cam_lidar: np.ndarray  # (4, 4) float64, LiDAR frame -> camera frame (OpenCV axes)
    labels: np.ndarray | None = None  # (H, W) int64 pixel labels in the label space (255 = ignore)
    depth: np.ndarray | None = None  # (H, W) float32 metric z-depth, 0 where unknown
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        src = self.source or f"camera {self.name}"
        _check_array(src, "image", self.image, np.uint8, (None, None, 3))
        h, w = self.image.shape[:2]
        K = _check_array(src, "K", self.K, (np.float64, np.float32), (3, 3), finite=True)
        if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
            raise _fail(src, "K", f"not a pinhole intrinsic matrix: {K.tolist()}")
        _check_transform(src, "T_cam_lidar", self.T_cam_lidar)
        if self.labels is not None:
            _check_array(src, "labels", self.labels, np.int64, (h, w))
        if self.depth is not None:
            _check_array(src, "depth", self.depth, np.float32, (h, w))

    @property
    def image_size(self) -> tuple[int, int]:
        """(W, H), as PIL reports it."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass
class Boxes:
    """3D boxes of one frame in the LiDAR frame: (M, 7) = (x, y, z, dx, dy, dz, yaw)."""

    boxes: np.ndarray  # (M, 7) float32/float64
    names: np.ndarray  # (M,) str class names as the dataset spells them ("Car", "vehicle.car", ...)
    scores: np.ndarray | None = None  # (M,) float32 (predictions only)
    instance_ids: np.ndarray | None = None  # (M,) int64
    # Per-box extras keyed by name, each (M, ...): KITTI "truncation", "occlusion", "alpha", "bbox" (M, 4) ...
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        src = self.source or "boxes"
        if isinstance(self.names, list):
            self.names = np.asarray(self.names, dtype=str)
        _check_array(src, "boxes", self.boxes, (np.float32, np.float64), (None, 7), finite=True)
        m = self.boxes.shape[0]
        if not isinstance(self.names, np.ndarray) or self.names.shape != (m,) or (
            m and self.names.dtype.kind != "U"
        ):
            raise _fail(src, "names", f"expected ({m},) array of str, got {getattr(self.names, 'shape', None)}")
        if m and np.any(self.boxes[:, 3:6] < 0):
            raise _fail(src, "boxes", "negative box size (dx, dy, dz)")
        if self.scores is not None:
            _check_array(src, "scores", self.scores, (np.float32, np.float64), (m,), finite=True)
        if self.instance_ids is not None:
            _check_array(src, "instance_ids", self.instance_ids, np.int64, (m,))
        for key, value in self.attributes.items():
            if not isinstance(value, np.ndarray) or value.shape[:1] != (m,):
                raise _fail(src, f"attributes[{key!r}]", f"expected an array with {m} rows")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, mask: np.ndarray) -> Boxes:
        """The boxes where `mask` (bool or index array) selects."""
        return Boxes(
            self.boxes[mask],
            self.names[mask],
            None if self.scores is None else self.scores[mask],
            None if self.instance_ids is None else self.instance_ids[mask],
            {k: v[mask] for k, v in self.attributes.items()},
            self.source,
        )


@dataclass
class Frame:
    """One LiDAR sweep with its cameras, labels and boxes, in the LiDAR sensor frame."""

    frame_id: str
    points: np.ndarray  # (N, C) float32, columns named by `point_fields`, x, y, z first
    point_fields: tuple[str, ...] = ("x", "y", "z", "intensity")
    labels: np.ndarray | None = None  # (N,) int64 in the label space; 255 = ignore
    instance_ids: np.ndarray | None = None  # (N,) int64, 0 = no instance
    cameras: dict[str, CameraView] = field(default_factory=dict)
    boxes: Boxes | None = None
    ego_pose: np.ndarray | None = None  # (4, 4) T_global_lidar of this sweep
    timestamp: float = 0.0  # seconds
    meta: dict[str, Any] = field(default_factory=dict)  # split, scene, location, sequence, ...
    source: str = ""  # the file it was read from; used in error messages

    def __post_init__(self) -> None:
        src = self.source or self.frame_id
        pts = _check_array(src, "points", self.points, np.float32, (None, None), finite=True)
        if pts.shape[1] < 3:
            raise _fail(src, "points", f"expected at least 3 columns (x, y, z), got {pts.shape[1]}")
        if len(self.point_fields) != pts.shape[1] or tuple(self.point_fields[:3]) != ("x", "y", "z"):
            raise _fail(
                src, "point_fields",
                f"{tuple(self.point_fields)} must name the {pts.shape[1]} point columns, starting x, y, z",
            )
        n = pts.shape[0]
        if self.labels is not None:
            labels = _check_array(src, "labels", self.labels, np.int64, (None,))
            if labels.shape[0] != n:
                raise _fail(src, "labels", f"{labels.shape[0]} labels for {n} points")
        if self.instance_ids is not None:
            inst = _check_array(src, "instance_ids", self.instance_ids, np.int64, (None,))
            if inst.shape[0] != n:
                raise _fail(src, "instance_ids", f"{inst.shape[0]} instance ids for {n} points")
        for name, cam in self.cameras.items():
            if not isinstance(cam, CameraView):
                raise _fail(src, f"cameras[{name!r}]", f"expected CameraView, got {type(cam).__name__}")
            if cam.name != name:
                raise _fail(src, f"cameras[{name!r}]", f"camera is named {cam.name!r}")
        if self.boxes is not None and not isinstance(self.boxes, Boxes):
            raise _fail(src, "boxes", f"expected Boxes, got {type(self.boxes).__name__}")
        if self.ego_pose is not None:
            _check_transform(src, "ego_pose", self.ego_pose)

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    def field(self, name: str) -> np.ndarray:
        """Column `name` of the points, e.g. frame.field("intensity")."""
        if name not in self.point_fields:
            raise XmkdDataError(f"no point field {name!r} (have {self.point_fields})", self.source or self.frame_id)
        return self.points[:, self.point_fields.index(name)]
