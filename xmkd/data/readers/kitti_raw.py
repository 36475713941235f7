"""KITTI raw frames without labels: `<base>/<date>/<date>_drive_<dddd>_sync/{image_02,velodyne_points}/data/`
with the date folder's `calib_cam_to_cam.txt` and `calib_velo_to_cam.txt`.

`<base>` is `<root>/raw` when it exists (xmkd's synthetic KITTI layout), else `<root>`. Splits are eigen-style
frame lists (`<date>/<drive folder> <frame index> <l|r>`, as in monodepth2's `splits/`) found in
`<root>/ImageSets/*.txt` or `<root>/splits/*.txt`; without any list, every frame is in split `all`.
Frame ids are `<date>/<drive folder>/<10-digit index>`; the camera is image_02 (left colour). Without cameras
(`cameras=[]`) neither the images nor the date folder's calibration files are needed.
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
    image_size,
    matrix_list,
    read_finite_points,
    read_points,
    read_text,
    shared_part,
)
from xmkd.data.readers.kitti_files import read_calib_file, require_keys
from xmkd.errors import XmkdDataError
from xmkd.geometry.camera import kitti_camera


class KittiRawReader(DatasetReader):
    name = "kitti_raw"
    default_label_space = "nuscenes16"  # unlabelled
    camera_names = ("image_2",)
    label_kind = None  # unlabelled frames (HSRDN's extra training data)
    layout = ("[raw/]<date>/<date>_drive_<dddd>_sync/velodyne_points/data/<10 digits>.bin (or the frames listed in "
              "ImageSets/*.txt, splits/*.txt)")

    @property
    def base(self) -> Path:
        return self.root / "raw" if (self.root / "raw").is_dir() else self.root

    def _lists(self) -> dict[str, list[tuple[str, int]]]:
        lists: dict[str, list[tuple[str, int]]] = {}
        for folder in ("ImageSets", "splits"):
            for f in sorted((self.root / folder).glob("*.txt")):
                entries, malformed = [], None
                for lineno, line in enumerate(read_text(f, "split list").splitlines(), 1):
                    parts = line.split()
                    if len(parts) >= 2 and "_drive_" in parts[0] and parts[1].isdigit():
                        if len(parts) < 3 or parts[2] == "l":
                            entries.append((parts[0], int(parts[1])))
                    elif parts and malformed is None:
                        malformed = (lineno, line)
                if entries and malformed:  # a raw list with a bad line; a list of another kind is not ours to read
                    raise XmkdDataError(f"line {malformed[0]}: expected `<date>_drive_<n>_sync <frame number> [l|r]`, "
                                        f"got {malformed[1]!r}", source=str(f))
                if entries:
                    lists[f.stem] = entries
        return lists

    def scan(self, splits: Sequence[str] | None = None) -> Iterator[FrameRecord]:
        lists = self._lists()
        if not lists:
            frames = []
            for drive in sorted(self.base.glob("*/*_drive_*_sync")):
                folder = f"{drive.parent.name}/{drive.name}"
                for p in sorted((drive / "velodyne_points" / "data").glob("*.bin")):
                    frames.append((folder, int(p.stem)))
            lists = {"all": frames}
        membership: dict[tuple[str, int], list[str]] = {}
        for name, entries in lists.items():
            if splits and name not in splits:
                continue
            for key in entries:
                membership.setdefault(key, []).append(name)
        for (folder, idx), names in sorted(membership.items()):
            date = folder.split("/")[0]
            rel = self.base.relative_to(self.root)
            prefix = "" if str(rel) == "." else f"{rel}/"
            yield {"id": f"{folder}/{idx:010d}", "splits": names,
                   "lidar": f"{prefix}{folder}/velodyne_points/data/{idx:010d}.bin",
                   "calib": f"{prefix}{date}", "labels": None,
                   "cameras": {"image_2": {"file": f"{prefix}{folder}/image_02/data/{idx:010d}.png"}},
                   "sweeps": [], "meta": {"drive": folder, "frame_index": idx}}

    def calibration(self, date_dir: str) -> tuple[np.ndarray, np.ndarray]:
        return self.memo(("calibration", date_dir), lambda: self._calibration(date_dir))

    def _calibration(self, date_dir: str) -> tuple[np.ndarray, np.ndarray]:
        """(K, T_cam2_velo) of a date folder, from P_rect_02, R_rect_00 and the velo -> cam0 [R | T]."""
        cam_path = self.path(date_dir) / "calib_cam_to_cam.txt"
        velo_path = self.path(date_dir) / "calib_velo_to_cam.txt"
        for path in (cam_path, velo_path):
            if not path.is_file():
                raise XmkdDataError("calibration file is missing: it holds image_02's calibration; add it, or pass "
                                    "--cameras none for LiDAR only", source=str(path))
        cam = read_calib_file(cam_path)
        velo = read_calib_file(velo_path)
        require_keys(cam, ("P_rect_02", "R_rect_00"), cam_path)
        require_keys(velo, ("R", "T"), velo_path)
        if cam["P_rect_02"].size != 12 or cam["R_rect_00"].size != 9 or velo["R"].size != 9 or velo["T"].size != 3:
            raise XmkdDataError("calibration matrices of the wrong size", source=str(cam_path))
        tr = np.hstack([velo["R"].reshape(3, 3), velo["T"].reshape(3, 1)])
        return kitti_camera(cam["P_rect_02"].reshape(3, 4), cam["R_rect_00"].reshape(3, 3), tr)

    def check(self, record: FrameRecord) -> FrameRecord:
        rec = dict(record)
        calib, shared = shared_part(lambda: self.calibration(rec["calib"]) if self.with_cameras else None)
        checks = FileChecks()  # every bad file of the frame is listed, not only the first
        with also_reporting(shared):  # the date folder's calibration is shared: the frame's own files first
            points = checks(read_finite_points, self.path(rec["lidar"]), ("x", "y", "z", "reflectance"))
            if shared is not None:
                checks(image_size, self.path(rec["cameras"]["image_2"]["file"]))
                checks.raise_any()
                raise shared
            if calib is not None:
                rec["cameras"] = {"image_2": {**rec["cameras"]["image_2"], "K": matrix_list(calib[0]),
                                              "T_cam_lidar": matrix_list(calib[1])}}
            cameras = checks(self.check_cameras, rec)
            checks.raise_any()
            rec["stats"] = {"points": int(len(points)), "cameras": cameras, "boxes": {}}
        return rec

    def load(self, record: FrameRecord) -> Frame:
        points = read_points(self.path(record["lidar"]), 4)
        return self.make_frame(record, points, ("x", "y", "z", "intensity"), None)
