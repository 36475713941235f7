"""SemanticKITTI with the KITTI odometry colour images:
`<root>/sequences/XX/{velodyne/NNNNNN.bin, labels/NNNNNN.label, image_2/NNNNNN.png, calib.txt, poses.txt}`.

Splits: the official ones (`train` 00-07, 09, 10; `valid` (alias `val`) 08; `test` 11-21), xMUDA's
(`xmuda_train` 00-06, 09, 10; `xmuda_val` 07; `xmuda_test` 08) — or, when `<root>/xmkd_splits.json` exists
(xmkd's synthetic output), the sequences it lists. With `sweeps=k` the k nearest scans of the same sequence
are merged in through `poses.txt` (multi-scan aggregation); their points carry label ignore and a time-lag
column. Labels are `uint32`; the lower 16 bits are the raw semantic id, the upper 16 the instance id.

LiDAR only (`cameras=[]`): neither `image_2/` nor `calib.txt` is needed (SemanticKITTI without the odometry colour
images, as most people have it). `poses.txt` holds camera-0 poses, so the LiDAR poses need `calib.txt`'s `Tr`;
without it a frame has no pose, and merging sweeps is an error that says what is missing. `poses.txt` and
`times.txt` must have a line for every scan (`prepare` lists a scan beyond either table as a bad frame); sweeps merge
only scans that have both a pose and a time, so a frame near such a gap gets fewer sweeps, never an error.
Labels: a sequence with a `labels/` file for some scans needs one for every scan (a missing one is a bad frame); a
sequence without any (the test sequences) is unlabelled, and `prepare` / `inspect` count its frames as such.
A broken sequence file (calib.txt, poses.txt, times.txt) is reported with each frame's own bad files, if any.
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
    also_reporting,
    check_points,
    image_size,
    matrix_list,
    merge_sweeps,
    pick_sweeps,
    read_label_file,
    read_points,
    read_split_table,
    shared_part,
)
from xmkd.data.readers.kitti_files import read_calib_file, read_table, require_keys
from xmkd.errors import XmkdDataError
from xmkd.geometry.camera import kitti_camera
from xmkd.geometry.transforms import invert_transform

OFFICIAL_SPLITS = {
    "train": [0, 1, 2, 3, 4, 5, 6, 7, 9, 10], "valid": [8], "val": [8], "test": list(range(11, 22)),
    "xmuda_train": [0, 1, 2, 3, 4, 5, 6, 9, 10], "xmuda_val": [7], "xmuda_test": [8],
}


class SemanticKittiReader(DatasetReader):
    name = "semantickitti"
    default_label_space = "semantickitti19"
    camera_names = ("image_2",)
    layout = "sequences/<XX>/velodyne/<6 digits>.bin (or dataset/sequences/...), with labels/ beside velodyne/"

    @property
    def seq_root(self) -> Path:
        for cand in (self.root / "sequences", self.root / "dataset" / "sequences"):
            if cand.is_dir():
                return cand
        raise XmkdDataError(f"no sequences/ folder; expected {self.layout}", source=str(self.root))

    def split_table(self) -> dict[str, list[str]]:
        custom = self.root / "xmkd_splits.json"
        if custom.is_file():
            table = read_split_table(custom, "sequence")
            if "val" in table:
                table.setdefault("valid", table["val"])
            return table
        return {k: [f"{s:02d}" for s in v] for k, v in OFFICIAL_SPLITS.items()}

    def sequence(self, seq: str) -> dict:
        return self.memo(("sequence", seq), lambda: self._sequence(seq))

    def _sequence(self, seq: str) -> dict:
        """Calibration (K, T_cam2_velo, Tr; None without calib.txt when no camera is wanted), LiDAR poses (None
        without poses.txt or without Tr) and scan times (None without times.txt) of one sequence."""
        folder = self.seq_root / seq
        calib_path = folder / "calib.txt"
        K = T = Tr = None
        lidar_only = "; or pass --cameras none for LiDAR only (then calib.txt is needed only for poses)"
        if self.with_cameras and not calib_path.is_file():
            raise XmkdDataError(f"calibration file is missing: it holds image_2's calibration (P2, Tr){lidar_only}",
                                source=str(calib_path))
        if self.with_cameras or calib_path.is_file():
            calib = read_calib_file(calib_path)
            require_keys(calib, ("P2", "Tr") if self.with_cameras else ("Tr",), calib_path,
                         lidar_only if self.with_cameras else "")
            if "P2" in calib:
                K, T = kitti_camera(calib["P2"], np.eye(3), calib["Tr"])  # Tr maps to rectified camera 0 already
            Tr = np.vstack([calib["Tr"], [0, 0, 0, 1]])
        poses = None
        pose_path = folder / "poses.txt"
        if pose_path.is_file() and Tr is not None:
            raw = read_table(pose_path, 12, "pose table")
            cam0 = np.tile(np.eye(4), (len(raw), 1, 1))
            cam0[:, :3, :] = raw.reshape(-1, 3, 4)
            poses = invert_transform(Tr)[None] @ cam0 @ Tr[None]  # LiDAR poses: inv(Tr) . pose . Tr
        times_path = folder / "times.txt"
        times = read_table(times_path, 1, "scan time table")[:, 0] if times_path.is_file() else None
        return {"K": K, "T": T, "poses": poses, "times": times}

    def _short_table(self, seq: str, table: str, have: int, scan: int) -> XmkdDataError:
        return XmkdDataError(f"no line for scan {scan}: {have} line(s); expected one line per scan",
                             source=str(self.seq_root / seq / table))

    def scan(self, splits: Sequence[str] | None = None) -> Iterator[FrameRecord]:
        table = self.split_table()
        for seq_dir in sorted(p for p in self.seq_root.iterdir() if p.is_dir()):
            seq = seq_dir.name
            names = [k for k, v in table.items() if seq in v] or ["other"]
            if splits and not set(splits) & set(names):
                continue
            scans = sorted(p.stem for p in (seq_dir / "velodyne").glob("*.bin"))
            labelled = any((seq_dir / "labels").glob("*.label"))  # else an unlabelled sequence (test: 11-21)
            for stem in scans:
                label = seq_dir / "labels" / f"{stem}.label"
                yield {"id": f"{seq}/{stem}", "splits": names, "lidar": f"{seq_dir.relative_to(self.root)}/velodyne/"
                       f"{stem}.bin", "labels": str(label.relative_to(self.root)) if labelled else None,
                       "cameras": {"image_2": {"file": f"{seq_dir.relative_to(self.root)}/image_2/{stem}.png"}},
                       "meta": {"sequence": seq, "scan": int(stem)}, "sweeps": []}

    def check(self, record: FrameRecord) -> FrameRecord:
        rec = dict(record)
        name, i = rec["meta"]["sequence"], rec["meta"]["scan"]
        seq, shared = shared_part(lambda: self.sequence(name))  # calib.txt, poses.txt, times.txt
        checks = FileChecks()  # every bad file of the frame is listed, not only the first
        with also_reporting(shared):
            count = check_points(checks, self.path(rec["lidar"]), ("x", "y", "z", "remission"))
            stats = {"points": count or 0, "boxes": {}}
            if rec.get("labels"):
                stats["labels"] = checks(self._check_labels, rec, count)
            if seq is None:
                if self.with_cameras:  # its image decodes; the calibration is the sequence's
                    checks(image_size, self.path(rec["cameras"]["image_2"]["file"]))
                checks.raise_any()
                raise shared
            if self.with_cameras:
                rec["cameras"] = {"image_2": {**rec["cameras"]["image_2"], "K": matrix_list(seq["K"]),
                                              "T_cam_lidar": matrix_list(seq["T"])}}
            stats["cameras"] = checks(self.check_cameras, rec)
            for table in ("times", "poses"):  # listed beside the frame's bad files
                if seq[table] is not None and i >= len(seq[table]):
                    checks.errors.append(self._short_table(name, f"{table}.txt", len(seq[table]), i))
            checks.raise_any()
        if seq["times"] is not None:
            rec["timestamp"] = float(seq["times"][i])
        if seq["poses"] is not None:
            rec["ego_pose"] = matrix_list(seq["poses"][i])
            rec.setdefault("timestamp", 0.1 * i)
        rec["stats"] = stats
        return rec

    def _check_labels(self, rec: FrameRecord, count: int) -> dict[str, int]:
        """The raw label histogram of the frame's `.label` file (one per point, ids known to the label space); a
        missing file in a sequence that has labels is an error saying how many scans have theirs."""
        path = self.path(rec["labels"])
        if not path.is_file():
            name = rec["meta"]["sequence"]
            have = len(list(path.parent.glob("*.label")))
            scans = len(list((self.seq_root / name / "velodyne").glob("*.bin")))
            raise XmkdDataError(f"label file is missing: sequence {name} has labels for {have} of its {scans} scans; "
                                "expected one per scan (a sequence without any label file is read as unlabelled)",
                                source=str(path), field="labels")
        raw = read_label_file(path, np.uint32, count) & 0xFFFF
        self.label_space.from_raw(raw, source=str(path))  # unknown ids are errors
        return self.histogram(raw)

    def _sweep_sources(self, record: FrameRecord) -> tuple[dict, list[dict]]:
        """The sequence and the scans that may be merged into `record` ({"scan", "dt"}), or an error naming the
        missing or short file when the keyframe itself has no pose or time. Scans beyond the end of `poses.txt` or
        `times.txt` (which `prepare` lists as bad frames) are not merged: such a frame gets fewer sweeps."""
        name, i = record["meta"]["sequence"], record["meta"]["scan"]
        folder = self.seq_root / name
        if record.get("ego_pose") is None:
            missing = [f for f in ("calib.txt", "poses.txt") if not (folder / f).is_file()]
            raise XmkdDataError(f"sweeps={self.sweeps} merges scans through poses.txt and calib.txt's Tr, and this "
                                f"frame has no pose ({', '.join(missing) or 'prepared without them'}"
                                f"{' missing' if missing else ''}); use sweeps=0 or add them and prepare again",
                                source=str(folder), field="sweeps")
        seq = self.sequence(name)
        times = seq["times"]
        for table, rows in (("poses.txt", seq["poses"]), ("times.txt", times)):
            if table == "poses.txt" and rows is None:
                raise self._short_table(name, table, 0, i)
            if rows is not None and i >= len(rows):
                raise self._short_table(name, table, len(rows), i)
        if times is None:
            times = 0.1 * np.arange(len(seq["poses"]))
        last = min(len(seq["poses"]), len(times))  # scans with a pose and a time
        scans = sorted(j for j in (int(p.stem) for p in (folder / "velodyne").glob("*.bin")) if j != i and j < last)
        return seq, [{"scan": j, "dt": float(times[j] - times[i])} for j in scans]

    def _scan_points(self, seq: str, scan: int) -> np.ndarray:
        return read_points(self.seq_root / seq / "velodyne" / f"{scan:06d}.bin", 4)

    def load(self, record: FrameRecord) -> Frame:
        points = read_points(self.path(record["lidar"]), 4)
        labels = None
        if record.get("labels"):
            path = self.path(record["labels"])
            raw = read_label_file(path, np.uint32, len(points))
            labels = self.label_space.from_raw(raw & 0xFFFF, source=str(path))
            instances = (raw >> 16).astype(np.int64)
        fields: tuple[str, ...] = ("x", "y", "z", "intensity")
        n_key = len(points)
        if self.sweeps:
            seq, available = self._sweep_sources(record)
            T_key_world = invert_transform(seq["poses"][record["meta"]["scan"]])
            chosen = pick_sweeps(available, self.sweeps)
            points = merge_sweeps(points, [(self._scan_points(record["meta"]["sequence"], s["scan"]),
                                            T_key_world @ seq["poses"][s["scan"]], s["dt"]) for s in chosen])
            fields = (*fields, "time_lag")
            if labels is not None:
                extra = len(points) - n_key
                labels = np.concatenate([labels, np.full(extra, self.label_space.ignore_index, np.int64)])
                instances = np.concatenate([instances, np.zeros(extra, np.int64)])
        frame = self.make_frame(record, points, fields, labels,
                                instance_ids=instances if labels is not None else None)
        frame.meta["num_keyframe_points"] = n_key
        return frame
