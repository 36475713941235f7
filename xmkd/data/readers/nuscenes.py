"""nuScenes (v1.0-trainval / -mini / -test) with the lidarseg extension.

`scan` uses nuscenes-devkit once (install `xmkd[nuscenes]`) to walk the tables and writes everything a frame
needs into its record: LIDAR_TOP keyframe file, lidarseg file, every camera's file with `K` and `T_cam_lidar`
chained through both ego poses exactly as the devkit's `map_pointcloud_to_image` does, the keyframe's
global pose, boxes converted to the LiDAR frame, and up to 10 past and 10 future sweeps with their
transforms into the keyframe's LiDAR frame. Training then reads only the index and the files.

Splits per frame: the official scene splits (`train`, `val`, `test`, `mini_train`, `mini_val`), custom ones
from `<version>/splits.json`, and xMUDA-style subsets `<split>_usa` / `<split>_singapore` (log location) and
`<split>_day` / `<split>_night` ("night" in the scene description). SSDA: `train_singapore_labeled` holds the
first 72 scenes of `train_singapore` by name, `train_singapore_unlabeled` the rest (xMUDA's own scene list is
not reproduced). Labels are mapped by category *name* through the dataset's category.json, as the devkit does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from xmkd.data.frame import Frame
from xmkd.data.readers.base import (
    DatasetReader,
    FileChecks,
    FrameRecord,
    check_points,
    lfs_error,
    matrix_list,
    merge_sweeps,
    pick_sweeps,
    read_finite_points,
    read_label_file,
    read_points,
    read_split_table,
)
from xmkd.errors import XmkdDataError, XmkdError
from xmkd.geometry.transforms import invert_transform, make_transform

VERSIONS = ("v1.0-trainval", "v1.0-mini", "v1.0-test")
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
MAX_SWEEPS = 10
SSDA_LABELED_SCENES = 72


def require_devkit(why: str = "reading the nuScenes tables") -> None:
    """Raise `XmkdError` saying how to install nuscenes-devkit (the optional `xmkd[nuscenes]` extra) when it, or a
    part of it that `scan` uses, cannot be imported; `why` says what needs it."""
    try:
        import nuscenes  # noqa: F401
        import nuscenes.utils.splits  # noqa: F401
        from nuscenes import NuScenes  # noqa: F401
    except ImportError as err:
        raise XmkdError(f"{why} needs nuscenes-devkit, an optional dependency of xmkd that is not installed "
                        f"({err}): pip install 'xmkd[nuscenes]'") from None


def _pose(record: dict) -> np.ndarray:
    return make_transform(np.asarray(record["rotation"]), np.asarray(record["translation"]))


def nonfinite_fields(record: dict, fields: Sequence[str]) -> list[str]:
    """The names among `fields` of a table row (calibrated_sensor, ego_pose) whose values hold NaN or Inf (or are
    not numbers): devkit tables are JSON, which Python reads with NaN / Infinity, so the row must be checked."""
    bad = []
    for field in fields:
        try:
            ok = record.get(field) is None or bool(np.isfinite(np.asarray(record[field], np.float64)).all())
        except (TypeError, ValueError):
            ok = False
        if not ok:
            bad.append(field)
    return bad


POINT_FIELDS = ("x", "y", "z", "intensity", "ring")


class NuScenesReader(DatasetReader):
    name = "nuscenes"
    default_label_space = "nuscenes16"
    camera_names = CAMERAS
    layout = f"a table folder ({', '.join(VERSIONS)}) with samples/ beside it"

    def version(self) -> str:
        for v in VERSIONS:
            if (self.root / v).is_dir():
                return v
        raise XmkdDataError(f"no table folder; expected {self.layout}", source=str(self.root))

    def _devkit(self):
        require_devkit()
        from nuscenes import NuScenes

        version = self.version()
        try:
            return NuScenes(version=version, dataroot=str(self.root), verbose=False)
        except (AssertionError, KeyError, FileNotFoundError, IndexError, ValueError) as err:
            for table in sorted((self.root / version).glob("*.json")):  # a table that is a Git LFS pointer
                lfs = lfs_error(table)
                if lfs is not None:
                    raise lfs from None
            raise XmkdDataError(f"nuscenes-devkit cannot load {version}: {type(err).__name__}: {err}",
                                source=str(self.root / version)) from None

    def scan(self, splits: Sequence[str] | None = None) -> Iterator[FrameRecord]:
        nusc = self._devkit()  # first: it says how to install the devkit when it is missing
        from nuscenes.utils.splits import create_splits_scenes

        official = create_splits_scenes()
        custom_file = self.root / nusc.version / "splits.json"
        custom = read_split_table(custom_file, "scene") if custom_file.is_file() else {}
        self.meta["version"] = nusc.version
        self.meta["categories"] = {str(c["index"]): c["name"] for c in nusc.category if "index" in c}
        scene_splits: dict[str, list[str]] = {}
        sing = sorted(s["name"] for s in nusc.scene if s["name"] in official["train"]
                      and "singapore" in nusc.get("log", s["log_token"])["location"])
        for scene in nusc.scene:
            name = scene["name"]
            location = nusc.get("log", scene["log_token"])["location"]
            base = [k for k, v in official.items() if name in v] + [k for k, v in custom.items() if name in v]
            subsets = ["usa" if "boston" in location else "singapore" if "singapore" in location else None,
                       "night" if "night" in scene["description"].lower() else "day"]
            names = base + [f"{b}_{s}" for b in base for s in subsets if s]
            if "train_singapore" in names:
                names.append("train_singapore_labeled" if name in sing[:SSDA_LABELED_SCENES]
                             else "train_singapore_unlabeled")
            scene_splits[scene["token"]] = names
        for sample in nusc.sample:
            names = scene_splits[sample["scene_token"]]
            if splits and not set(splits) & set(names):
                continue
            yield self._record(nusc, sample, names)

    def _table_errors(self, nusc, sd: dict, channel: str, camera: str | None = None) -> list[dict]:
        """Errors (as JSON-able dicts, raised by `check`) for NaN / Inf in the calibrated_sensor and ego_pose rows of
        one sample_data row (`channel`: LIDAR_TOP, a camera, or a sweep); `camera` marks those that only matter
        when that camera is wanted. Otherwise they pass into the index and training blames the point file."""
        out = []
        for table, token, fields in (("calibrated_sensor", sd["calibrated_sensor_token"],
                                      ("rotation", "translation", "camera_intrinsic")),
                                     ("ego_pose", sd["ego_pose_token"], ("rotation", "translation"))):
            row = nusc.get(table, token)
            for field in nonfinite_fields(row, fields):
                out.append({"message": f"NaN/Inf in {row[field]!r}; expected finite numbers",
                            "source": str(self.root / nusc.version / f"{table}.json"),
                            "field": f"{channel} {field} (token {token})", "camera": camera,
                            "row": f"{table}/{token}/{field}"})  # sweeps share the keyframe's calibration row
        return out

    def _record(self, nusc, sample: dict, names: list[str]) -> FrameRecord:
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        table_errors = self._table_errors(nusc, sd, "LIDAR_TOP")
        T_ego_lidar = _pose(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
        T_global_lidar = _pose(nusc.get("ego_pose", sd["ego_pose_token"])) @ T_ego_lidar
        T_lidar_global = invert_transform(T_global_lidar)
        cameras = {}
        for ch in CAMERAS:
            if ch not in sample["data"]:
                continue
            cam_sd = nusc.get("sample_data", sample["data"][ch])
            table_errors += self._table_errors(nusc, cam_sd, ch, camera=ch)
            cs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
            T_global_cam = _pose(nusc.get("ego_pose", cam_sd["ego_pose_token"])) @ _pose(cs)
            cameras[ch] = {"file": cam_sd["filename"], "K": cs["camera_intrinsic"],
                           "T_cam_lidar": matrix_list(invert_transform(T_global_cam) @ T_global_lidar),
                           "width": cam_sd["width"], "height": cam_sd["height"]}
        sweeps = []
        for direction in ("prev", "next"):
            cur = sd
            for _ in range(MAX_SWEEPS):
                if not cur[direction]:
                    break
                cur = nusc.get("sample_data", cur[direction])
                table_errors += self._table_errors(nusc, cur, f"LIDAR_TOP sweep {cur['filename']}")
                T_g = _pose(nusc.get("ego_pose", cur["ego_pose_token"])) @ _pose(
                    nusc.get("calibrated_sensor", cur["calibrated_sensor_token"]))
                sweeps.append({"file": cur["filename"], "T": matrix_list(T_lidar_global @ T_g),
                               "dt": (cur["timestamp"] - sd["timestamp"]) * 1e-6})
        boxes, box_names = [], []
        for ann_token in sample["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            centre = T_lidar_global @ np.append(ann["translation"], 1.0)
            R = T_lidar_global[:3, :3] @ make_transform(np.asarray(ann["rotation"]), np.zeros(3))[:3, :3]
            w, l, h = ann["size"]
            boxes.append([*centre[:3], l, w, h, float(np.arctan2(R[1, 0], R[0, 0]))])
            box_names.append(ann["category_name"])
        lidarseg = None
        if getattr(nusc, "lidarseg", None):
            try:
                lidarseg = nusc.get("lidarseg", sd["token"])["filename"]
            except KeyError:
                lidarseg = None
        scene = nusc.get("scene", sample["scene_token"])
        log = nusc.get("log", scene["log_token"])
        return {"id": sample["token"], "splits": names, "lidar": sd["filename"], "labels": lidarseg,
                "cameras": cameras, "ego_pose": matrix_list(T_global_lidar), "timestamp": sample["timestamp"] * 1e-6,
                "boxes": {"boxes": boxes, "names": box_names}, "sweeps": sweeps,
                "meta": {"scene": scene["name"], "description": scene["description"], "location": log["location"],
                         "lidar_token": sd["token"]}, "table_errors": table_errors}

    def camera_table(self, record: FrameRecord) -> str:
        return f"{self.root / self.meta.get('version', self.version()) / 'sample_data.json'} (sample {record['id']})"

    def raw_lut(self) -> np.ndarray:
        return self._label_lut()

    def _label_lut(self) -> np.ndarray:
        cats = self.meta.get("categories")
        if not cats:
            raise XmkdDataError("the index has no category table (prepare it again)", source=str(self.root))
        return self.label_space.lut_for_names({int(k): v for k, v in cats.items()}, source="category.json")

    def check(self, record: FrameRecord) -> FrameRecord:
        rec = dict(record)
        checks = FileChecks()  # every bad file of the frame is listed, not only the first
        rows = set()
        for err in rec.pop("table_errors", None) or []:  # NaN / Inf calibration or pose rows, found by `scan`
            if (err["camera"] is None or self.wanted([err["camera"]])) and err["row"] not in rows:
                rows.add(err["row"])  # each bad row once per frame
                checks.errors.append(XmkdDataError(err["message"], source=err["source"], field=err["field"]))
        count = check_points(checks, self.path(rec["lidar"]), POINT_FIELDS)
        stats = {"points": count or 0, "cameras": checks(self.check_cameras, rec), "boxes": self.box_stats(rec)}
        if rec.get("labels"):
            stats["labels"] = checks(self._check_labels, self.path(rec["labels"]), count)
        for sweep in rec["sweeps"]:  # each sweep file is read once, though neighbouring keyframes share them
            if ("sweep", sweep["file"]) not in self._memo:
                if checks(read_finite_points, self.path(sweep["file"]), POINT_FIELDS) is not None:
                    self._memo[("sweep", sweep["file"])] = True  # a bad one is listed for every frame using it
        checks.raise_any()
        rec["stats"] = stats
        return rec

    def _check_labels(self, path: Path, count: int | None) -> dict[str, int]:
        """The raw label histogram of a lidarseg file (one uint8 per point, ids in category.json)."""
        raw = read_label_file(path, np.uint8, count)
        known = np.array([int(k) for k in self.meta.get("categories", {})])
        unknown = np.setdiff1d(np.unique(raw), known)
        if len(unknown):
            raise XmkdDataError(f"unknown label id(s) {unknown[:5].tolist()} (not in category.json)",
                                source=str(path), field="labels")
        self._label_lut()  # every category name must be in the nuScenes-lidarseg taxonomy
        return self.histogram(raw)

    def load(self, record: FrameRecord) -> Frame:
        points = read_points(self.path(record["lidar"]), 5)
        n_key = len(points)
        labels = None
        if record.get("labels"):
            path = self.path(record["labels"])
            raw = read_label_file(path, np.uint8, n_key).astype(np.int64)
            lut = self._label_lut()
            if raw.max(initial=0) >= len(lut):
                raise XmkdDataError(f"label id {int(raw.max())} not in category.json", source=str(path))
            labels = lut[raw]
        fields: tuple[str, ...] = POINT_FIELDS
        if self.sweeps:
            chosen = pick_sweeps(record["sweeps"], self.sweeps)
            points = merge_sweeps(points, [(read_points(self.path(s["file"]), 5), np.asarray(s["T"]), s["dt"])
                                           for s in chosen])
            fields = (*fields, "time_lag")
            if labels is not None:
                labels = np.concatenate([labels, np.full(len(points) - n_key, self.label_space.ignore_index)])
        frame = self.make_frame(record, points, fields, labels)
        frame.meta["num_keyframe_points"] = n_key
        return frame
