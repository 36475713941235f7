"""The instance database and the paste transform of U2MKD's LiDAR augmentation (METHODS.md section 1).

`build_database` cuts every instance of the thing classes with at least `min_points` points out of the
training scans (points only; instances come from the dataset's instance ids, or from the points inside each
3D box where a dataset has only boxes, like nuScenes lidarseg). It works in shards of frames, each written
atomically, so an interrupted `xmkd prepare-instances` resumes where it stopped.

`InstancePaste` pastes K instances per scan onto ground cells (5 m x 5 m) whose range matches the
instance's original range: the instance is rotated about the sensor's z axis to the cell's azimuth (so the
sensor sees the same side of it, at the same distance), jittered by up to +-0.5 m, dropped onto the cell's
ground height, and rejected if its footprint touches any point of the scan above the ground or another pasted
instance. The number of added points is capped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from xmkd.data.frame import Frame
from xmkd.data.labels import LabelSpace, get_label_space
from xmkd.errors import XmkdDataError, XmkdError
from xmkd.geometry.boxes import points_box_index
from xmkd.io import atomic_write, atomic_write_text, is_architecture_only

# Instance ("thing") classes and ground classes of each label space, by class name.
THINGS = {
    "nuscenes16": ("barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
                   "traffic_cone", "trailer", "truck"),
    "semantickitti19": ("car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
                        "motorcyclist"),
    "waymo22": ("car", "truck", "bus", "other_vehicle", "motorcyclist", "bicyclist", "pedestrian", "bicycle",
                "motorcycle", "construction_cone"),
}
GROUND = {
    "nuscenes16": ("driveable_surface", "other_flat", "sidewalk", "terrain"),
    "semantickitti19": ("road", "parking", "sidewalk", "other-ground", "terrain"),
    "waymo22": ("road", "lane_marker", "other_ground", "walkable", "sidewalk", "curb"),
}
MIN_POINTS = {"nuscenes16": 10, "semantickitti19": 40, "waymo22": 50}
FORMAT_VERSION = 1


def class_ids(space: LabelSpace, table: dict[str, tuple[str, ...]]) -> np.ndarray:
    if space.name not in table:
        raise XmkdError(f"no thing/ground classes defined for label space {space.name!r} "
                        f"(have {', '.join(table)})")
    return np.array([space.class_names.index(n) for n in table[space.name]], np.int64)


def frame_instances(frame: Frame, space: LabelSpace, min_points: int) -> list[tuple[int, np.ndarray]]:
    """(class id, point indices) of every thing instance of a frame's keyframe with >= min_points points."""
    if frame.labels is None:
        raise XmkdDataError("frame has no point labels", source=frame.source or frame.frame_id)
    n_key = int(frame.meta.get("num_keyframe_points", frame.num_points))
    labels = frame.labels[:n_key]
    thing = np.isin(labels, class_ids(space, THINGS))
    if frame.instance_ids is not None:
        group = np.where(thing & (frame.instance_ids[:n_key] > 0), frame.instance_ids[:n_key], -1)
    elif frame.boxes is not None and len(frame.boxes):
        group = np.where(thing, points_box_index(frame.points[:n_key, :3], np.asarray(frame.boxes.boxes,
                                                                                      np.float64)), -1)
    else:
        return []
    out = []
    for g in np.unique(group[group >= 0]):
        idx = np.nonzero(group == g)[0]
        cls = np.bincount(labels[idx]).argmax()
        idx = idx[labels[idx] == cls]  # an instance id spanning two classes keeps its main one
        if len(idx) >= min_points:
            out.append((int(cls), idx))
    return out


@dataclass
class InstanceDatabase:
    """All instances: `points` (P, 4) x, y, z, intensity in the scan's LiDAR frame, instance i at
    points[offsets[i]:offsets[i] + counts[i]]; per instance its class, range and azimuth of the xy centroid and
    its lowest z."""

    points: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    classes: np.ndarray
    ranges: np.ndarray
    azimuths: np.ndarray
    z_min: np.ndarray
    label_space: str

    def __len__(self) -> int:
        return len(self.counts)

    def instance(self, i: int) -> np.ndarray:
        return self.points[self.offsets[i]: self.offsets[i] + self.counts[i]]

    @classmethod
    def load(cls, folder: str | Path) -> InstanceDatabase:
        folder = Path(folder)
        path = folder / "instances.npz"
        if not path.exists():
            raise XmkdError(f"{path}: no instance database (run `xmkd prepare-instances`)")
        data = np.load(path)
        meta = json.loads((folder / "database.json").read_text())
        counts = data["counts"]
        return cls(data["points"], np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64), counts,
                   data["classes"], data["ranges"], data["azimuths"], data["z_min"], meta["label_space"])


def _shard_arrays(frames: Any, indices: range, space: LabelSpace, min_points: int) -> dict[str, np.ndarray]:
    pts, counts, classes, ranges, azimuths, z_min = [], [], [], [], [], []
    for i in indices:
        frame = frames[i]
        intensity = frame.field("intensity") if "intensity" in frame.point_fields else np.zeros(frame.num_points)
        for cls, idx in frame_instances(frame, space, min_points):
            p = np.column_stack([frame.points[idx, :3], intensity[idx]]).astype(np.float32)
            cx, cy = p[:, 0].mean(), p[:, 1].mean()
            pts.append(p)
            counts.append(len(p))
            classes.append(cls)
            ranges.append(np.hypot(cx, cy))
            azimuths.append(np.arctan2(cy, cx))
            z_min.append(p[:, 2].min())
    return {"points": np.concatenate(pts) if pts else np.zeros((0, 4), np.float32),
            "counts": np.asarray(counts, np.int64), "classes": np.asarray(classes, np.int64),
            "ranges": np.asarray(ranges, np.float32), "azimuths": np.asarray(azimuths, np.float32),
            "z_min": np.asarray(z_min, np.float32)}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Arrays to an .npz file, atomically."""
    atomic_write(path, lambda f: np.savez(f, **arrays), fsync=False)


def sharded(count: int, shards: Path, shard_size: int, make: Callable[[range], dict[str, np.ndarray]], desc: str,
            progress: bool = True) -> list[dict[str, np.ndarray]]:
    """The arrays `make(frame range)` of `count` frames in shards of `shard_size`, each saved atomically under
    `shards` and reused when it is already there (so an interrupted build resumes)."""
    shards.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, count, shard_size))
    bar = tqdm(total=count, desc=desc, disable=not progress)
    for s in starts:
        path = shards / f"shard_{s // shard_size:05d}_{shard_size}.npz"
        stop = min(s + shard_size, count)
        if not path.exists():
            save_npz(path, make(range(s, stop)))
        bar.update(stop - s)
    bar.close()
    return [dict(np.load(shards / f"shard_{s // shard_size:05d}_{shard_size}.npz")) for s in starts]


def build_database(frames: Any, out: str | Path, label_space: str, min_points: int | None = None,
                   shard_size: int = 200, progress: bool = True) -> dict[str, Any]:
    """Cut the instances of `frames` (an `IndexedFrames` of the training split) into `out`; resumable."""
    space = get_label_space(label_space)
    min_points = MIN_POINTS.get(space.name, 10) if min_points is None else min_points
    out = Path(out)
    parts = sharded(len(frames), out / "shards", shard_size,
                    lambda r: _shard_arrays(frames, r, space, min_points), "instances", progress)
    merged = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in
              ("points", "counts", "classes", "ranges", "azimuths", "z_min")}
    save_npz(out / "instances.npz", merged)
    per_class = {space.class_names[c]: int(n) for c, n in zip(*np.unique(merged["classes"], return_counts=True))}
    summary = {"version": FORMAT_VERSION, "label_space": space.name, "min_points": min_points,
               "frames": len(frames), "instances": int(len(merged["counts"])),
               "points": int(len(merged["points"])), "per_class": per_class}
    atomic_write_text(out / "database.json", json.dumps(summary, indent=1))
    return summary


@dataclass
class PasteOptions:
    database: str = ""  # folder written by `xmkd prepare-instances`; empty = no pasting
    k: int = 6  # instances pasted per scan
    cell: float = 5.0  # ground cell size (m)
    range_tolerance: float = 2.5  # |cell range - original range| (m)
    jitter: float = 0.5  # uniform xy jitter (m)
    min_ground_points: int = 5  # a cell is ground when it holds this many ground points and nothing else
    # at most this many pasted points per scan: the release's cap (github:isunLt/U2MKD @ d8dfa69
    # core/datasets/utils.py:402, InstAugmentationV2 stops once more than 5000 were pasted; here an instance that
    # would pass the cap is skipped instead, so the cap holds exactly)
    max_added_points: int = 5000


class InstancePaste:
    def __init__(self, db: InstanceDatabase, space: LabelSpace, opts: PasteOptions):
        if db.label_space != space.name:
            raise XmkdError(f"{opts.database}: instance database is in label space {db.label_space!r}, "
                            f"the run uses {space.name!r}")
        self.db, self.space, self.opts = db, space, opts
        self.ground = class_ids(space, GROUND)
        self.by_class = [np.nonzero(db.classes == c)[0] for c in np.unique(db.classes)]

    def _ground_cells(self, xyz: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centres (M, 2) and mean ground heights (M,) of the ground cells that hold nothing else."""
        c = self.opts.cell
        keys = np.floor(xyz[:, :2] / c).astype(np.int64)
        is_ground = np.isin(labels, self.ground)
        occupied = {tuple(k) for k in np.unique(keys[~is_ground & (labels != self.space.ignore_index)], axis=0)}
        gk, inverse, counts = np.unique(keys[is_ground], axis=0, return_inverse=True, return_counts=True)
        heights = np.bincount(inverse.reshape(-1), weights=xyz[is_ground, 2]) / np.maximum(counts, 1)
        free = np.array([counts[i] >= self.opts.min_ground_points and tuple(k) not in occupied
                         for i, k in enumerate(gk)], bool) if len(gk) else np.zeros(0, bool)
        return (gk[free] + 0.5) * c, heights[free]

    def __call__(self, xyz: np.ndarray, labels: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scan points (N, 3) and labels -> pasted points (M, 4: x, y, z, intensity) and their labels, and the
        footprint boxes (K', 4: xmin, ymin, xmax, ymax) of the pasted instances."""
        o = self.opts
        centres, heights = self._ground_cells(xyz, labels)
        scan_above = xyz[~np.isin(labels, self.ground)]
        out_pts, out_lab, boxes, added = [], [], [], 0
        if not len(centres) or not len(self.db):
            return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros((0, 4))
        cell_range = np.hypot(centres[:, 0], centres[:, 1])
        for _ in range(o.k * 3):  # a few spare tries for rejected placements
            if len(boxes) >= o.k:
                break
            pool = self.by_class[rng.integers(len(self.by_class))]  # class-balanced
            i = int(pool[rng.integers(len(pool))])
            if added + self.db.counts[i] > o.max_added_points:
                continue
            near = np.nonzero(np.abs(cell_range - self.db.ranges[i]) < o.range_tolerance)[0]
            if not len(near):
                continue
            j = int(near[rng.integers(len(near))])
            angle = np.arctan2(centres[j, 1], centres[j, 0]) - self.db.azimuths[i]
            ca, sa = np.cos(angle), np.sin(angle)
            p = self.db.instance(i).astype(np.float64)
            xy = p[:, :2] @ np.array([[ca, sa], [-sa, ca]])  # rotate about the sensor: same view, new azimuth
            xy += centres[j] - xy.mean(0) + rng.uniform(-o.jitter, o.jitter, 2)
            p = np.column_stack([xy, p[:, 2] - self.db.z_min[i] + heights[j], p[:, 3]])
            box = np.array([*xy.min(0) - 0.1, *xy.max(0) + 0.1])
            if _touches(scan_above, box) or any(_overlap(box, b) for b in boxes):
                continue
            out_pts.append(p.astype(np.float32))
            out_lab.append(np.full(len(p), self.db.classes[i], np.int64))
            boxes.append(box)
            added += len(p)
        if not out_pts:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros((0, 4))
        return np.concatenate(out_pts), np.concatenate(out_lab), np.stack(boxes)


def _touches(points: np.ndarray, box: np.ndarray) -> bool:
    return bool(np.any((points[:, 0] >= box[0]) & (points[:, 0] <= box[2]) & (points[:, 1] >= box[1]) &
                       (points[:, 1] <= box[3])))


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3])


_CACHE: dict[str, InstanceDatabase] = {}


def paste_for(space: LabelSpace, opts: PasteOptions) -> InstancePaste | None:
    """The paste transform of a config (None when `opts.database` is empty); each process loads the
    database once. None too under `xmkd.io.architecture_only()` (no file read)."""
    if not opts.database or is_architecture_only():
        return None
    if opts.database not in _CACHE:
        _CACHE[opts.database] = InstanceDatabase.load(opts.database)
    return InstancePaste(_CACHE[opts.database], space, opts)
