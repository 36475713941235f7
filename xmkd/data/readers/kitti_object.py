"""KITTI 3D object detection: `<root>/{training,testing}/{velodyne,image_2,calib,label_2}/<id>.*` and
`<root>/ImageSets/<split>.txt`.

Boxes come back in the LiDAR frame (x, y, z, dx, dy, dz, yaw), converted from the rectified camera-0 frame
of the labels; the KITTI fields (truncation, occlusion, alpha, 2D box, score) travel as box attributes.
DontCare regions have no 3D box: their 2D boxes are in `frame.meta["dontcare_bbox"]`.
Frame ids are the 6-digit numbers for `training/` and `testing/<id>` for the test set.

Every `training/` frame needs its `label_2` file (a frame without labels belongs in `testing/`). Without cameras
(`cameras=[]`) no `image_2` file is needed, and `calib/` only where a frame has labels (every training frame): its
boxes are in the rectified camera frame, so `R0_rect` and `Tr_velo_to_cam` are needed to place them (`P2` is not).
`testing/` frames need neither labels nor, without cameras, calibration.
Optional beside them: `planes/<id>.txt` (road planes, for gt-sampling), read when present, and `depth_2/<id>.png`
(CaDDN's dense depth maps for image_2, 16-bit PNG, metres x 256: the CMKD / HSRDN students' depth targets), read
only by a reader asked for them (`depth_maps`), and then required: recipes that do not use them neither pay for
reading them (~20 ms a frame) nor fail on a bad one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from xmkd.data.frame import Frame
from xmkd.data.readers.base import (
    DatasetReader,
    FileChecks,
    FrameRecord,
    image_size,
    matrix_list,
    read_depth_png,
    read_finite_points,
    read_points,
    read_text,
)
from xmkd.data.readers.kitti_files import read_calib_file, read_label_file, require_keys
from xmkd.errors import XmkdDataError
from xmkd.geometry.boxes import kitti_camera_to_lidar
from xmkd.geometry.camera import kitti_camera, kitti_rect_transform


def kitti_boxes(label_path: Path, T_rect_velo: np.ndarray) -> dict:
    """Index form of a label file: LiDAR-frame boxes, names, KITTI attributes, DontCare 2D boxes."""
    objs = read_label_file(label_path)
    care = objs.names != "DontCare"
    boxes = kitti_camera_to_lidar(objs.camera_boxes[care], T_rect_velo) if care.any() else np.zeros((0, 7))
    attrs = {"truncation": objs.truncation[care].tolist(), "occlusion": objs.occlusion[care].tolist(),
             "alpha": objs.alpha[care].tolist(), "bbox": objs.bbox[care].tolist()}
    if objs.score is not None:
        attrs["score"] = objs.score[care].tolist()
    return {"boxes": boxes.tolist(), "names": objs.names[care].tolist(), "attributes": attrs,
            "ignored_names": objs.names[~care].tolist(), "ignored_bbox": objs.bbox[~care].tolist()}


class KittiObjectReader(DatasetReader):
    name = "kitti_object"
    default_label_space = "nuscenes16"  # detection only: KITTI object has no point labels
    camera_names = ("image_2",)
    label_kind = "boxes"
    layout = "training/velodyne/<6 digits>.bin (or testing/velodyne/) with image_2/, calib/, label_2/ beside it"
    lidar_only_layout = "training/velodyne/<6 digits>.bin (or testing/velodyne/) with calib/, label_2/ beside it"
    depth_maps = False  # load image_2's depth_2/<id>.png into its `depth` (set on an instance: `IndexedFrames.reader`)

    def _split_members(self) -> dict[str, set[str]]:
        sets = {}
        for f in sorted((self.root / "ImageSets").glob("*.txt")):
            ids = set()
            lines = read_text(f, "split list").splitlines()
            if "_drive_" in next((line for line in lines if line.strip()), ""):
                continue  # a KITTI raw list (`<date>_drive_<n>_sync <frame> l`): the kitti_raw reader's
            for lineno, line in enumerate(lines, 1):
                fid = line.strip()
                if fid and not fid.isdigit():  # was dropped silently, and with it the whole split
                    raise XmkdDataError(f"line {lineno}: expected one frame id of digits per line (e.g. 000123), "
                                        f"got {line!r}", source=str(f))
                if fid:
                    ids.add(fid)
            if ids:
                sets[f.stem] = ids
        return sets

    def scan(self, splits: Sequence[str] | None = None) -> Iterator[FrameRecord]:
        members = self._split_members()
        for part in ("training", "testing"):
            velo = self.root / part / "velodyne"
            ids = sorted(p.stem for p in velo.glob("*.bin")) if velo.is_dir() else []
            if part == "training":  # frames listed in ImageSets but without a point cloud are reported missing
                ids = sorted(set(ids) | set().union(*[s for k, s in members.items() if k != "test"]))
            for fid in ids:
                in_splits = [k for k, s in members.items() if fid in s and (part == "training") == (k != "test")]
                in_splits = in_splits or [part]
                if splits and not set(splits) & set(in_splits):
                    continue
                label = f"{part}/label_2/{fid}.txt"
                yield {"id": fid if part == "training" else f"testing/{fid}", "splits": in_splits,
                       "lidar": f"{part}/velodyne/{fid}.bin", "calib": f"{part}/calib/{fid}.txt",
                       "labels": label if (self.root / label).is_file() or part == "training" else None,
                       "cameras": {"image_2": {"file": f"{part}/image_2/{fid}.png"}}, "sweeps": [],
                       "meta": {"part": part}}

    def check(self, record: FrameRecord) -> FrameRecord:
        rec = dict(record)
        checks = FileChecks()  # every bad file of the frame is listed, not only the first
        points = checks(read_finite_points, self.path(rec["lidar"]), ("x", "y", "z", "reflectance"))
        label_path = self.path(rec["labels"]) if rec.get("labels") else None
        has_labels = label_path is not None and (label_path.is_file() or rec["meta"]["part"] == "training")
        if has_labels and not label_path.is_file():
            checks.errors.append(XmkdDataError("label file is missing: every training/ frame has a label_2 file "
                                               "(frames without labels belong in testing/)", source=str(label_path)))
        rec["cameras"] = {n: c for n, c in rec["cameras"].items() if self.wanted([n])}
        T_rect = checks(self._calibrate, rec, has_labels)
        if has_labels and label_path.is_file():
            if T_rect is not None:
                rec["boxes"] = checks(kitti_boxes, label_path, T_rect)
            else:  # the label file is checked on its own when the calibration is bad or missing
                checks(read_label_file, label_path)
        if T_rect is None and rec["cameras"]:  # no calibration: the image must still decode
            checks(image_size, self.path(rec["cameras"]["image_2"]["file"]))
            cameras = {}
        else:
            cameras = checks(self.check_cameras, rec)
        checks.raise_any()
        rec["stats"] = {"points": int(len(points)), "cameras": cameras, "boxes": self.box_stats(rec)}
        return rec

    def _calibrate(self, rec: FrameRecord, has_labels: bool) -> np.ndarray | None:
        """The frame's T_rect_lidar (None when neither labels nor cameras need the calibration file and there is
        none), with `rec["T_rect_lidar"]` and the cameras' K and T_cam_lidar filled in."""
        calib_path = self.path(rec["calib"])
        if rec["cameras"]:
            why = "; image_2 needs P2, R0_rect, Tr_velo_to_cam (or pass --cameras none for LiDAR only)"
        else:
            why = "; the label boxes are in the rectified camera frame, which needs R0_rect and Tr_velo_to_cam"
        if (has_labels or rec["cameras"]) and not calib_path.is_file():
            raise XmkdDataError(f"calibration file is missing{why}", source=str(calib_path))
        if not (rec["cameras"] or calib_path.is_file()):
            return None
        calib = read_calib_file(calib_path)
        require_keys(calib, ("R0_rect", "Tr_velo_to_cam") + (("P2",) if rec["cameras"] else ()), calib_path, why)
        T_rect = kitti_rect_transform(calib["R0_rect"], calib["Tr_velo_to_cam"])
        rec["T_rect_lidar"] = matrix_list(T_rect)
        if rec["cameras"]:
            K, T = kitti_camera(calib["P2"], calib["R0_rect"], calib["Tr_velo_to_cam"])
            rec["cameras"] = {"image_2": {**rec["cameras"]["image_2"], "K": matrix_list(K),
                                          "T_cam_lidar": matrix_list(T)}}
        return T_rect

    def load(self, record: FrameRecord) -> Frame:
        points = read_points(self.path(record["lidar"]), 4)
        frame = self.make_frame(record, points, ("x", "y", "z", "intensity"), None)
        if record.get("boxes"):
            frame.meta["dontcare_bbox"] = np.asarray(record["boxes"]["ignored_bbox"], dtype=np.float64).reshape(-1, 4)
        if record.get("T_rect_lidar") is not None:
            frame.meta["T_rect_lidar"] = np.asarray(record["T_rect_lidar"])
        plane = self.path(record["lidar"].replace("/velodyne/", "/planes/").replace(".bin", ".txt"))
        if plane.is_file():  # the optional road planes (gt-sampling puts its boxes on them)
            frame.meta["road_plane"] = read_road_plane(plane)
        cam = frame.cameras.get("image_2")
        if self.depth_maps and cam is not None:  # the depth maps (CMKD / HSRDN's depth targets), when asked for
            depth = self.path(record["lidar"].replace("/velodyne/", "/depth_2/").replace(".bin", ".png"))
            if not depth.is_file():
                raise XmkdDataError("depth map file is missing: model.depth_maps=depth_2 reads CaDDN's depth_2 maps "
                                    "(16-bit PNG, metres x 256) for every training frame; model.depth_maps=lidar "
                                    "computes the targets from the LiDAR points", source=str(depth))
            frame.cameras["image_2"] = dataclasses.replace(cam, depth=read_depth_png(depth, cam.image_size))
        return frame


def read_road_plane(path: Path) -> np.ndarray:
    """(4,) road plane a, b, c, d (a x + b y + c z + d = 0 in the rectified camera frame) of a KITTI `planes/` file
    (its 4th line), scaled to a unit normal that points up (-y) [OpenPCDet: kitti_dataset.py get_road_plane]."""
    lines = read_text(path, "road plane").splitlines()
    try:
        plane = np.array([float(v) for v in lines[3].split()], np.float64)
    except (IndexError, ValueError):
        plane = np.zeros(0)
    if plane.shape != (4,) or not np.isfinite(plane).all() or np.linalg.norm(plane[:3]) == 0:
        raise XmkdDataError("expected 4 numbers (a b c d) with a non-zero normal on line 4", source=str(path),
                            field="plane")
    plane = -plane if plane[1] > 0 else plane
    return plane / np.linalg.norm(plane[:3])


def read_kitti_object_frame(root: str | Path, frame_id: str, split: str = "training",
                            cameras: Sequence[str] | None = None, depth_maps: bool = False) -> Frame:
    """One frame by id, without an index (for `xmkd viz` and quick looks); `depth_maps`: with its depth_2 map."""
    reader = KittiObjectReader(root, cameras=cameras)
    reader.depth_maps = depth_maps
    part = "testing" if split == "testing" else "training"
    fid = frame_id.split("/")[-1]
    rec = {"id": frame_id, "splits": [part], "lidar": f"{part}/velodyne/{fid}.bin", "calib": f"{part}/calib/{fid}.txt",
           "labels": f"{part}/label_2/{fid}.txt" if (reader.root / part / "label_2" / f"{fid}.txt").is_file() else None,
           "cameras": {"image_2": {"file": f"{part}/image_2/{fid}.png"}}, "sweeps": [], "meta": {"part": part}}
    return reader.load(reader.check(rec))
