"""Ground-truth sampling, SECOND's "gt_sampling" augmentation, from a database of boxes and the points inside them
[OpenPCDet / CMKD: pcdet/datasets/kitti/kitti_dataset.py create_groundtruth_database (the database);
pcdet/datasets/augmentor/database_sampler.py (the sampling); tools/cfgs/dataset_configs/kitti_dataset.yaml:22-36
(the KITTI settings: Car 20 / Pedestrian 15 / Cyclist 15, at least 5 points, difficulty known, whole-scene limit,
boxes on the road plane)].

`build_box_database` (`xmkd prepare-instances --boxes`) cuts every labelled box of a training split out of the full
scans: its points (x, y, z relative to the box centre, and intensity), the box, its class name, its point count and
its KITTI difficulty. Shards of frames are written atomically, so an interrupted build resumes.

`GTSampler` adds boxes to a training scene: per class it tops the scene up to the configured count (with
`limit_whole_scene`, count minus the scene's own boxes of that class), draws that many database boxes of the class
with at least `min_points` points and a known difficulty, keeps those whose BEV footprint (exact rotated IoU) touches
neither a box already in the scene nor another drawn box, removes the scene's points inside the kept boxes and adds
the boxes' own points, at the boxes' recorded positions (moved in z onto the frame's road plane when it has one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmkd.data.frame import Frame
from xmkd.data.instances import save_npz, sharded
from xmkd.errors import XmkdDataError
from xmkd.geometry.boxes import points_in_boxes
from xmkd.geometry.iou import bev_iou
from xmkd.io import atomic_write_text

FORMAT_VERSION = 1
DEFAULT_FOLDER = "xmkd_gt_database"  # under the dataset root
UNRATED = -2  # difficulty of a box without KITTI's 2D box / truncation / occlusion
_ARRAYS = ("points", "counts", "boxes", "names", "difficulty", "frames")


def kitti_difficulty(height: np.ndarray, truncation: np.ndarray, occlusion: np.ndarray) -> np.ndarray:
    """KITTI level per box, 0 easy / 1 moderate / 2 hard / -1 none, from the 2D box height in pixels (the release
    counts y2 - y1 + 1), truncation and occlusion [OpenPCDet: pcdet/utils/object3d_kitti.py:38-52]."""
    h, t, o = (np.asarray(v, np.float64) for v in (height, truncation, occlusion))
    level = np.full(h.shape, -1, np.int64)
    for lvl, (min_h, max_t, max_o) in reversed(list(enumerate([(40, 0.15, 0), (25, 0.3, 1), (25, 0.5, 2)]))):
        level[(h >= min_h) & (t <= max_t) & (o <= max_o)] = lvl
    return level


def frame_box_entries(frame: Frame) -> dict[str, np.ndarray]:
    """The database entries of one frame: every box with the points inside it (all its points, not only the
    camera's view, as the release cuts them from the full scan)."""
    boxes = frame.boxes
    if boxes is None or len(boxes) == 0:
        return _empty()
    xyz = frame.points[:, :3]
    intensity = frame.field("intensity") if "intensity" in frame.point_fields else np.zeros(frame.num_points)
    inside = points_in_boxes(xyz, np.asarray(boxes.boxes, np.float64))  # (N, M)
    a = boxes.attributes
    if {"bbox", "truncation", "occlusion"} <= set(a):
        bbox = np.asarray(a["bbox"], np.float64).reshape(-1, 4)
        difficulty = kitti_difficulty(bbox[:, 3] - bbox[:, 1] + 1, a["truncation"], a["occlusion"])
    else:
        difficulty = np.full(len(boxes), UNRATED, np.int64)
    pts, counts = [], []
    for m in range(len(boxes)):
        p = np.column_stack([xyz[inside[:, m]] - boxes.boxes[m, :3], intensity[inside[:, m]]])
        pts.append(p.astype(np.float32))
        counts.append(len(p))
    return {"points": np.concatenate(pts), "counts": np.asarray(counts, np.int64),
            "boxes": np.asarray(boxes.boxes, np.float32), "names": np.asarray(boxes.names, str),
            "difficulty": difficulty.astype(np.int64), "frames": np.full(len(boxes), frame.frame_id)}


def _empty() -> dict[str, np.ndarray]:
    return {"points": np.zeros((0, 4), np.float32), "counts": np.zeros(0, np.int64),
            "boxes": np.zeros((0, 7), np.float32), "names": np.zeros(0, str), "difficulty": np.zeros(0, np.int64),
            "frames": np.zeros(0, str)}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if len(p["counts"])] or [_empty()]
    return {k: np.concatenate([p[k] for p in parts]) for k in _ARRAYS}


def build_box_database(frames: Any, out: str | Path, shard_size: int = 200, progress: bool = True
                       ) -> dict[str, Any]:
    """Cut the boxes of `frames` (an `IndexedFrames` of the training split, with boxes) into `out`; resumable.
    Returns the summary also written to `out/database.json`."""
    out = Path(out)
    parts = sharded(len(frames), out / "box_shards", shard_size,
                    lambda r: _concat([frame_box_entries(frames[i]) for i in r]), "boxes", progress)
    merged = _concat(parts)
    save_npz(out / "boxes.npz", merged)
    names, counts = np.unique(merged["names"], return_counts=True)
    summary = {"version": FORMAT_VERSION, "kind": "boxes", "frames": len(frames), "boxes": int(len(merged["counts"])),
               "points": int(len(merged["points"])), "per_class": {str(n): int(c) for n, c in zip(names, counts)}}
    atomic_write_text(out / "database.json", json.dumps(summary, indent=1))
    return summary


@dataclass
class BoxDatabase:
    """Boxes (K, 7) with their class names, difficulty and source frame; box k's points (x, y, z relative to its
    centre, intensity) are points[offsets[k]:offsets[k] + counts[k]]."""

    points: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    boxes: np.ndarray
    names: np.ndarray
    difficulty: np.ndarray
    frames: np.ndarray

    def __len__(self) -> int:
        return len(self.counts)

    def box_points(self, k: int) -> np.ndarray:
        return self.points[self.offsets[k]: self.offsets[k] + self.counts[k]]

    @classmethod
    def load(cls, folder: str | Path) -> BoxDatabase:
        folder = Path(folder)
        path, meta_path = folder / "boxes.npz", folder / "database.json"
        if not path.is_file() or not meta_path.is_file():
            raise XmkdDataError("no box database here; build it with `xmkd prepare-instances --boxes --index "
                                "<index> --split train --out <folder>`", source=str(folder))
        meta = json.loads(meta_path.read_text())
        if meta.get("kind") != "boxes" or meta.get("version") != FORMAT_VERSION:
            raise XmkdDataError(f"expected kind 'boxes', version {FORMAT_VERSION}, got kind {meta.get('kind')!r}, "
                                f"version {meta.get('version')!r}", source=str(meta_path), field="kind")
        data = np.load(path)
        counts = data["counts"]
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return cls(data["points"], offsets, counts, data["boxes"], data["names"], data["difficulty"], data["frames"])


@dataclass
class GTSamplingConfig:
    """`model.augment.gt_sampling` of `lidar_det`; the defaults are CMKD's KITTI teacher's."""

    enabled: bool = True
    database: str = ""  # folder of `xmkd prepare-instances --boxes` ("" = <data.root>/xmkd_gt_database)
    sample_groups: dict[str, int] = field(default_factory=lambda: {"Car": 20, "Pedestrian": 15, "Cyclist": 15})
    min_points: dict[str, int] = field(default_factory=lambda: {"Car": 5, "Pedestrian": 5, "Cyclist": 5})
    remove_difficulty: list[int] = field(default_factory=lambda: [-1])  # KITTI level -1: not even hard
    limit_whole_scene: bool = True  # top the scene's own boxes of a class up to its count
    remove_extra_width: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # scene points cleared around
    road_plane: bool = True  # move sampled boxes onto the frame's road plane when it has one (KITTI planes/)


def put_on_road_plane(boxes: np.ndarray, plane: np.ndarray, T_rect_lidar: np.ndarray) -> np.ndarray:
    """z shift (K,) that puts the bottoms of LiDAR boxes (K, 7) on a road plane a x + b y + c z + d = 0 given in the
    rectified camera frame (KITTI planes/, normal up) [OpenPCDet: database_sampler.py put_boxes_on_road_planes]."""
    a, b, c, d = (float(v) for v in plane)
    centre = np.column_stack([boxes[:, :3], np.ones(len(boxes))]) @ T_rect_lidar.T
    centre[:, 1] = (-d - a * centre[:, 0] - c * centre[:, 2]) / b  # the plane below each centre
    on_plane = centre @ np.linalg.inv(T_rect_lidar).T
    return boxes[:, 2] - boxes[:, 5] / 2 - on_plane[:, 2]


class GTSampler:
    def __init__(self, db: BoxDatabase, cfg: GTSamplingConfig):
        """Per class of `cfg.sample_groups`, the database boxes it may draw (a class the database lacks, as a few
        synthetic frames may, draws nothing)."""
        self.db, self.cfg = db, cfg
        self.pools: dict[str, np.ndarray] = {}
        for name in cfg.sample_groups:
            ok = (db.names == name) & (db.counts >= cfg.min_points.get(name, 0))
            ok &= ~np.isin(db.difficulty, list(cfg.remove_difficulty))
            self.pools[name] = np.nonzero(ok)[0]

    def __call__(self, points: np.ndarray, boxes: np.ndarray, names: np.ndarray, rng: np.random.Generator,
                 road_plane: np.ndarray | None = None, T_rect_lidar: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scene points (N, 4: x, y, z, intensity), its boxes (M, 7) with class names (M,) -> the same three with
        the sampled boxes added (appended after the scene's boxes; their points first)."""
        cfg = self.cfg
        existing = np.asarray(boxes, np.float64).reshape(-1, 7)
        chosen: list[np.ndarray] = []
        for name, target in cfg.sample_groups.items():
            n = int(target) - (int((names == name).sum()) if cfg.limit_whole_scene else 0)
            pool = self.pools[name]
            if n <= 0 or not len(pool):
                continue
            pick = rng.choice(pool, size=min(n, len(pool)), replace=False)
            cand = self.db.boxes[pick].astype(np.float64)
            with_scene = bev_iou(cand, existing).max(1) if len(existing) else np.zeros(len(pick))
            among = bev_iou(cand, cand)
            np.fill_diagonal(among, 0)
            valid = (with_scene + among.max(1)) == 0  # touches nothing, not even another candidate
            existing = np.concatenate([existing, cand[valid]])
            chosen.append(pick[valid])
        picked = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        if not len(picked):
            return points, boxes, names
        new_boxes = self.db.boxes[picked].astype(np.float64)
        shift = np.zeros(len(picked))
        if cfg.road_plane and road_plane is not None and T_rect_lidar is not None:
            shift = put_on_road_plane(new_boxes, road_plane, T_rect_lidar)
            new_boxes[:, 2] -= shift
        obj = [self.db.box_points(k).astype(np.float64) + [*new_boxes[i, :3], 0] for i, k in enumerate(picked)]
        clear = new_boxes.copy()
        clear[:, 3:6] += np.asarray(cfg.remove_extra_width, np.float64)
        scene = points[~points_in_boxes(points[:, :3], clear).any(1)]
        out_points = np.concatenate([*[o.astype(points.dtype) for o in obj], scene])
        out_boxes = np.concatenate([np.asarray(boxes, np.float64).reshape(-1, 7), new_boxes]).astype(boxes.dtype)
        return out_points, out_boxes, np.concatenate([names, self.db.names[picked]])


_CACHE: dict[str, BoxDatabase] = {}


def sampler_for(cfg: GTSamplingConfig, data_root: str) -> GTSampler | None:
    """The sampler of a config (None when off); each process loads its database once."""
    if not cfg.enabled or not cfg.sample_groups:
        return None
    folder = cfg.database or str(Path(data_root) / DEFAULT_FOLDER)
    if folder not in _CACHE:
        _CACHE[folder] = BoxDatabase.load(folder)
    return GTSampler(_CACHE[folder], cfg)
