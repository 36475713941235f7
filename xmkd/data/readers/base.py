"""The reader contract and what every reader shares.

A reader turns one dataset's on-disk format into `Frame`s in three steps:
- `scan(splits)`: discover the frames (cheap; file paths, calibration, poses, split membership) as
  `FrameRecord`s — plain JSON-able dicts, the rows of the index `xmkd prepare` writes;
- `check(record)`: open every file of the frame, validate it (sizes, counts, calibration, labels) and fill
  `record["stats"]` (points, raw label histogram, image sizes, boxes per class); raises `XmkdDataError`
  naming the file and the problem;
- `load(record)`: read the frame as a `Frame` in the configured label space (with extra sweeps merged in
  if asked).
Training reads only the index and the files; `scan` may use heavy tooling (the nuScenes devkit) once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xmkd.data.frame import Boxes, CameraView, Frame
from xmkd.data.labels import LabelSpace, get_label_space
from xmkd.errors import XmkdDataError

FrameRecord = dict[str, Any]  # {"id", "splits", "lidar", "labels", "cameras", "ego_pose", "timestamp", "boxes",
#                                "sweeps", "meta", "stats"}; paths are relative to the dataset root


def read_points(path: Path, columns: int, dtype: Any = np.float32) -> np.ndarray:
    """A raw binary point file of `columns` values per point; truncated files are errors, not reshapes."""
    try:
        raw = np.fromfile(path, dtype=dtype)
    except FileNotFoundError:
        raise XmkdDataError("point cloud file is missing", source=str(path)) from None
    if raw.size % columns:
        size = raw.size * np.dtype(dtype).itemsize
        raise XmkdDataError(f"truncated: {size} bytes is not a whole number of {columns * np.dtype(dtype).itemsize}"
                            f"-byte points", source=str(path))
    return raw.reshape(-1, columns)


def read_label_file(path: Path, dtype: Any, count: int) -> np.ndarray:
    """Per-point labels; their number must equal the point count."""
    try:
        labels = np.fromfile(path, dtype=dtype)
    except FileNotFoundError:
        raise XmkdDataError("label file is missing", source=str(path)) from None
    if labels.size != count:
        raise XmkdDataError(f"{labels.size} labels for {count} points", source=str(path), field="labels")
    return labels


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise XmkdDataError("image file is missing", source=str(path)) from None
    except OSError as err:
        raise XmkdDataError(f"unreadable image: {err}", source=str(path)) from None


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) from the header; checks that the file decodes."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.size
    except FileNotFoundError:
        raise XmkdDataError("image file is missing", source=str(path)) from None
    except OSError as err:
        raise XmkdDataError(f"unreadable image: {err}", source=str(path)) from None


def as_matrix(value: Any, shape: tuple[int, int], source: str, field: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape or not np.isfinite(arr).all():
        raise XmkdDataError(f"expected a finite {shape[0]}x{shape[1]} matrix, got shape {arr.shape}", source=source,
                            field=field)
    return arr


class DatasetReader:
    """Base class: subclasses set `name`, `default_label_space`, and implement scan / check / load."""

    name = ""
    default_label_space = "nuscenes16"
    label_dtype: Any = None

    def __init__(self, root: str | Path, label_space: str | LabelSpace | None = None,
                 cameras: Sequence[str] | None = None, sweeps: int = 0, meta: dict[str, Any] | None = None):
        self.root = Path(root)
        self.meta = dict(meta or {})
        self._memo: dict[tuple, Any] = {}
        if not self.root.is_dir():
            raise XmkdDataError("dataset root is not a folder", source=str(self.root))
        space = label_space or self.default_label_space
        self.label_space = get_label_space(space) if isinstance(space, str) else space
        self.cameras = None if cameras is None else list(cameras)  # None = every camera, [] = none
        self.sweeps = sweeps

    # -- to implement -----------------------------------------------------------------------------------
    def scan(self, splits: Sequence[str] | None = None) -> Iterator[FrameRecord]:
        raise NotImplementedError

    def check(self, record: FrameRecord) -> FrameRecord:
        raise NotImplementedError

    def load(self, record: FrameRecord) -> Frame:
        raise NotImplementedError

    def index_meta(self) -> dict[str, Any]:
        """Dataset-level facts the index keeps beside the frames (e.g. nuScenes' category table)."""
        return dict(self.meta)

    def memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """Per-reader cache for things read once and shared by many frames (calibration, poses)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def raw_lut(self) -> np.ndarray:
        """Raw label id (as stored in this dataset's files) -> class of the label space."""
        return self.label_space.lut

    # -- shared ------------------------------------------------------------------------------------------
    def path(self, relative: str) -> Path:
        return self.root / relative

    def wanted(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if self.cameras is None or n in self.cameras]

    def camera_views(self, record: FrameRecord) -> dict[str, CameraView]:
        views = {}
        for name in self.wanted(list(record["cameras"])):
            cam = record["cameras"][name]
            path = self.path(cam["file"])
            views[name] = CameraView(name, read_image(path), as_matrix(cam["K"], (3, 3), str(path), "K"),
                                     as_matrix(cam["T_cam_lidar"], (4, 4), str(path), "T_cam_lidar"),
                                     source=str(path))
        return views

    def check_cameras(self, record: FrameRecord) -> dict[str, list[int]]:
        sizes = {}
        for name, cam in record["cameras"].items():
            path = self.path(cam["file"])
            sizes[name] = list(image_size(path))
            as_matrix(cam["K"], (3, 3), str(path), "K")
            as_matrix(cam["T_cam_lidar"], (4, 4), str(path), "T_cam_lidar")
        return sizes

    @staticmethod
    def box_stats(record: FrameRecord) -> dict[str, int]:
        names = (record.get("boxes") or {}).get("names", []) + (record.get("boxes") or {}).get("ignored_names", [])
        return dict(Counter(names))

    @staticmethod
    def boxes_of(record: FrameRecord, source: str) -> Boxes | None:
        b = record.get("boxes")
        if not b:
            return None
        arr = np.asarray(b["boxes"], dtype=np.float64).reshape(-1, 7)
        attrs = {k: np.asarray(v) for k, v in b.get("attributes", {}).items()}
        return Boxes(arr, np.asarray(b["names"], dtype=str).reshape(-1), attributes=attrs, source=source)

    def histogram(self, raw: np.ndarray) -> dict[str, int]:
        """Raw label id -> count, as JSON-able str keys."""
        ids, counts = np.unique(raw, return_counts=True)
        return {str(int(i)): int(c) for i, c in zip(ids, counts)}

    def make_frame(self, record: FrameRecord, points: np.ndarray, fields: tuple[str, ...],
                   labels: np.ndarray | None, **extra: Any) -> Frame:
        source = str(self.path(record["lidar"]))
        pose = record.get("ego_pose")
        return Frame(
            record["id"], np.ascontiguousarray(points, dtype=np.float32), fields, labels,
            cameras=self.camera_views(record), boxes=self.boxes_of(record, source),
            ego_pose=None if pose is None else as_matrix(pose, (4, 4), source, "ego_pose"),
            timestamp=float(record.get("timestamp", 0.0)), meta=dict(record.get("meta", {})), source=source, **extra,
        )


def matrix_list(m: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(m)]


def pick_sweeps(available: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` sweeps nearest in time to the keyframe, alternating past and future (past first), so 4 gives
    2 past + 2 future when both exist. Each sweep dict has "dt" (seconds, negative = past)."""
    past = sorted((s for s in available if s["dt"] < 0), key=lambda s: -s["dt"])
    future = sorted((s for s in available if s["dt"] > 0), key=lambda s: s["dt"])
    out: list[dict[str, Any]] = []
    while len(out) < count and (past or future):
        if past:
            out.append(past.pop(0))
        if future and len(out) < count:
            out.append(future.pop(0))
    return out


def merge_sweeps(points: np.ndarray, sweeps: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """Keyframe points (N, C) + sweeps [(points (M, C), T_key_sweep (4, 4), dt seconds)] -> (N + sum M, C + 1)
    in the keyframe's LiDAR frame, with the time lag |dt| as the last column (0 for keyframe points)."""
    parts = [np.column_stack([points, np.zeros(len(points), np.float32)])]
    for pts, T, dt in sweeps:
        xyz = pts[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
        moved = np.column_stack([xyz.astype(np.float32), pts[:, 3:], np.full(len(pts), abs(dt), np.float32)])
        parts.append(moved)
    return np.concatenate(parts).astype(np.float32)
