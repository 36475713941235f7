"""Waymo Open Dataset v2 (parquet, read with pyarrow; no TensorFlow).

Layout: `<root>[/<split>]/<component>/<segment>.parquet` for the components `lidar`, `lidar_calibration`,
`lidar_segmentation` (optional), `camera_image`, `camera_calibration` and `vehicle_pose` (optional); splits are
the folders `training`, `validation`, `testing` when present, else everything is split `all`.

Points: the TOP LiDAR's first return, converted from its range image with the formulas of the official
`range_image_utils` (inclination rows reversed so row 0 is the highest beam, azimuth corrected by the
extrinsic's yaw) into the **vehicle frame**, which is the frame of the returned `Frame`. The per-pixel
ego-motion correction the official code applies to the TOP LiDAR is not reproduced (points differ by the
vehicle's motion during the 0.1 s sweep). Labels come from the segmentation range image (semantic class,
instance id), images from the JPEG bytes; camera distortion is ignored (pinhole `K` from f_u, f_v, c_u, c_v).
Waymo labels a subset of frames: a frame with a segmentation row is also in split `<split>_labelled` (e.g.
`training_labelled`), the split to train a segmentation recipe on. Frame ids are `<segment>/<timestamp_micros>`;
a segment whose `lidar` file cannot be read, or is missing while other components have the segment, is one bad
entry named `<segment>` (the other segments are read). A frame's cameras are the calibrated ones with an image at
its timestamp; a camera named in `--cameras` that a frame lacks (no calibration row, or no image at its
timestamp) makes the frame a bad file, never a silent drop. Without cameras (`cameras=[]`) neither `camera_image`
nor `camera_calibration` is read. With cameras, a root without `camera_image` is an error and a segment without
its file a bad file (both say `--cameras none`), never a silent "no camera".
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from xmkd.data.frame import CameraView, Frame
from xmkd.data.readers.base import (
    DatasetReader,
    FileChecks,
    FrameRecord,
    as_matrix,
    cameras_hint,
    lfs_error,
    matrix_list,
    raise_scan_error,
    require_finite,
    require_points,
    unreadable_record,
)
from xmkd.errors import XmkdDataError, XmkdError

TOP = 1
CAMERA_NAMES = {1: "FRONT", 2: "FRONT_LEFT", 3: "FRONT_RIGHT", 4: "SIDE_LEFT", 5: "SIDE_RIGHT"}
SPLITS = ("training", "validation", "testing")
SEG = "key.segment_context_name"
TS = "key.frame_timestamp_micros"
LIDAR = "[LiDARComponent].range_image_return1"
LABEL = "[LiDARSegmentationLabelComponent].range_image_return1"
LCAL = "[LiDARCalibrationComponent]"
CCAL = "[CameraCalibrationComponent]"
CHANNELS = {LIDAR: ("range", "intensity", "elongation", "is_in_nlz"),  # the range images' channels (v2 schema)
            LABEL: ("instance_id", "semantic_class")}
# Waymo cameras are x forward, y left, z up; OpenCV cameras x right, y down, z forward.
OPENCV_FROM_WAYMO_CAMERA = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                                     [0.0, 0.0, 0.0, 1.0]])


def _pq():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise XmkdError("reading Waymo v2 needs pyarrow: pip install 'xmkd[waymo]'") from None
    return pq


def _read(path: Path, columns: list[str], filters=None):
    try:
        return _pq().read_table(path, columns=columns, filters=filters)
    except FileNotFoundError:
        raise XmkdDataError("parquet file is missing", source=str(path)) from None
    except KeyError as err:
        raise XmkdDataError(f"missing column {err}", source=str(path)) from None
    except Exception as err:  # pyarrow raises ArrowInvalid & co. for corrupt or foreign files
        raise lfs_error(path) or XmkdDataError(f"unreadable parquet: {type(err).__name__}: {err}",
                                               source=str(path)) from None


def range_image_to_points(range_image: np.ndarray, extrinsic: np.ndarray, inclinations: np.ndarray) -> tuple[
        np.ndarray, np.ndarray]:
    """Range image (H, W, C) (channel 0 = range, 1 = intensity), LiDAR -> vehicle extrinsic (4, 4) and beam
    inclinations (H,) in increasing order -> (points (N, 4) x, y, z, intensity in the vehicle frame, flat
    pixel indices (N,) of the returns with range > 0)."""
    h, w = range_image.shape[:2]
    incl = np.asarray(inclinations, np.float64)[::-1]  # row 0 = highest beam
    az_corr = np.arctan2(extrinsic[1, 0], extrinsic[0, 0])
    ratios = (np.arange(w, 0, -1, dtype=np.float64) - 0.5) / w
    azimuth = (ratios * 2.0 - 1.0) * np.pi - az_corr
    r = range_image[..., 0].astype(np.float64)
    cos_i = np.cos(incl)[:, None]
    x = np.cos(azimuth)[None, :] * cos_i * r
    y = np.sin(azimuth)[None, :] * cos_i * r
    z = np.sin(incl)[:, None] * r
    pts = np.stack([x, y, z], -1).reshape(-1, 3)
    valid = np.nonzero(r.reshape(-1) > 0)[0]
    xyz = pts[valid] @ extrinsic[:3, :3].T + extrinsic[:3, 3]
    intensity = range_image[..., 1].reshape(-1)[valid]
    return np.column_stack([xyz, intensity]).astype(np.float32), valid


def beam_inclinations(minimum: float, maximum: float, values, height: int) -> np.ndarray:
    """Per-row inclinations, increasing: the calibration's values, or uniform in [min, max] (pixel centres)."""
    if values is not None and len(values):
        return np.asarray(values, np.float64)
    return minimum + (np.arange(height) + 0.5) / height * (maximum - minimum)


def _transform(values, source: str, field: str) -> np.ndarray:
    """A row-major 4x4 transform stored as 16 numbers; another count or NaN / Inf is an error naming the field."""
    arr = np.asarray(values if values is not None else [], dtype=np.float64).reshape(-1)
    return as_matrix(arr.reshape(4, 4) if arr.size == 16 else arr, (4, 4), source, field)


def _decode(data: bytes, source: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except OSError as err:
        raise XmkdDataError(f"undecodable image: {err}", source=source) from None


class WaymoReader(DatasetReader):
    name = "waymo"
    default_label_space = "waymo22"
    camera_names = tuple(CAMERA_NAMES.values())
    layout = f"[{'|'.join(SPLITS)}/]lidar/<segment>.parquet with lidar_calibration/ (v2 components) beside it"

    def _bases(self) -> list[tuple[str, Path]]:
        """(split, folder) of the folders holding components; a folder with components but no `lidar` one, or a
        root without any `lidar` component, is an error that names what is there."""
        folders = [(s, self.root / s) for s in SPLITS if (self.root / s).is_dir()] or [("all", self.root)]
        with_lidar = [(s, b) for s, b in folders if (b / "lidar").is_dir()]
        for _, base in folders:
            found = sorted(p.name for p in base.iterdir() if p.is_dir() and any(p.glob("*.parquet")))
            if not (base / "lidar").is_dir() and (found or not with_lidar):
                raise XmkdDataError(f"no lidar component (lidar/<segment>.parquet: the point clouds); found "
                                    f"{', '.join(found) or 'no component'}; expected {self.layout}", source=str(base))
            if self.with_cameras and (base / "lidar").is_dir() and not (base / "camera_image").is_dir():
                raise XmkdDataError("no camera_image component (camera_image/<segment>.parquet: the images the "
                                    "cameras need); add it, or pass --cameras none (data.cameras: []) for LiDAR only",
                                    source=str(base))
        return with_lidar

    @staticmethod
    def _segments_without_lidar(base: Path) -> dict[str, list[str]]:
        """Segment -> the components that have it, for segments that some component has but `lidar` has not."""
        lidar = {p.stem for p in (base / "lidar").glob("*.parquet")}
        others: dict[str, list[str]] = {}
        for comp in sorted(p for p in base.iterdir() if p.is_dir() and p.name != "lidar"):
            for f in comp.glob("*.parquet"):
                if f.stem not in lidar:
                    others.setdefault(f.stem, []).append(comp.name)
        return others

    def scan(self, splits: Sequence[str] | None = None) -> Iterator[FrameRecord]:
        for split, base in self._bases():
            if splits and split not in splits:
                continue
            rel = base.relative_to(self.root)
            pre = "" if str(rel) == "." else f"{rel}/"
            for seg, comps in sorted(self._segments_without_lidar(base).items()):  # listed as bad, not dropped
                err = XmkdDataError(f"lidar file is missing: segment {seg} has {', '.join(comps)} but no point "
                                    "clouds", source=str(base / "lidar" / f"{seg}.parquet"))
                yield unreadable_record(seg, [split], f"{pre}lidar/{seg}.parquet", err)
            for lidar in sorted((base / "lidar").glob("*.parquet")):
                seg = lidar.stem
                try:
                    table = _read(lidar, [TS, "key.laser_name"])
                except XmkdDataError as err:  # one bad segment: listed as bad, the others are still read
                    yield unreadable_record(seg, [split], f"{pre}lidar/{seg}.parquet", err)
                    continue
                ts = np.asarray(table.column(TS))[np.asarray(table.column("key.laser_name")) == TOP]
                has = {c: (base / c / f"{seg}.parquet").is_file() for c in
                       ("lidar_segmentation", "camera_image", "vehicle_pose")}
                for t in sorted(set(ts.tolist())):
                    yield {"id": f"{seg}/{t}", "splits": [split], "lidar": f"{pre}lidar/{seg}.parquet",
                           "labels": f"{pre}lidar_segmentation/{seg}.parquet" if has["lidar_segmentation"] else None,
                           "calib": f"{pre}lidar_calibration/{seg}.parquet",
                           "camera_image": f"{pre}camera_image/{seg}.parquet" if has["camera_image"] else None,
                           "camera_calib": f"{pre}camera_calibration/{seg}.parquet",
                           "vehicle_pose": f"{pre}vehicle_pose/{seg}.parquet" if has["vehicle_pose"] else None,
                           "cameras": {}, "sweeps": [], "timestamp": t * 1e-6,
                           "meta": {"segment": seg, "timestamp_micros": int(t)}}

    def lidar_calibration(self, rel: str) -> tuple[np.ndarray, float, float, object]:
        return self.memo(("lidar_calibration", rel), lambda: self._lidar_calibration(rel))

    def _lidar_calibration(self, rel: str) -> tuple[np.ndarray, float, float, object]:
        path = self.path(rel)
        t = _read(path, ["key.laser_name", f"{LCAL}.extrinsic.transform", f"{LCAL}.beam_inclination.min",
                         f"{LCAL}.beam_inclination.max", f"{LCAL}.beam_inclination.values"]).to_pylist()
        rows = [r for r in t if r["key.laser_name"] == TOP]
        if not rows:
            raise XmkdDataError("no calibration for the TOP LiDAR (laser_name 1)", source=str(path))
        r = rows[0]
        ext = _transform(r[f"{LCAL}.extrinsic.transform"], str(path), "extrinsic")
        return ext, r[f"{LCAL}.beam_inclination.min"], r[f"{LCAL}.beam_inclination.max"], \
            r[f"{LCAL}.beam_inclination.values"]

    def camera_calibration(self, rel: str) -> dict[str, dict | XmkdDataError]:
        return self.memo(("camera_calibration", rel), lambda: self._camera_calibration(rel))

    def _camera_calibration(self, rel: str) -> dict[str, dict | XmkdDataError]:
        """Camera name -> {K, T_cam_lidar, width, height}, or the error of that camera's row (NaN / Inf in an
        intrinsic or the extrinsic), raised only when the camera is wanted."""
        path = self.path(rel)
        cols = ["key.camera_name", *(f"{CCAL}.intrinsic.{k}" for k in ("f_u", "f_v", "c_u", "c_v")),
                f"{CCAL}.extrinsic.transform", f"{CCAL}.width", f"{CCAL}.height"]
        out: dict[str, dict | XmkdDataError] = {}
        for r in _read(path, cols).to_pylist():
            name = CAMERA_NAMES.get(r["key.camera_name"], str(r["key.camera_name"]))
            bad = [k for k in ("f_u", "f_v", "c_u", "c_v")
                   if not isinstance(r[f"{CCAL}.intrinsic.{k}"], (int, float))
                   or not np.isfinite(r[f"{CCAL}.intrinsic.{k}"])]
            if bad:
                out[name] = XmkdDataError(f"{r[f'{CCAL}.intrinsic.{bad[0]}']}; expected a finite number",
                                          source=str(path), field=f"{name} {CCAL}.intrinsic.{bad[0]}")
                continue
            K = [[r[f"{CCAL}.intrinsic.f_u"], 0.0, r[f"{CCAL}.intrinsic.c_u"]],
                 [0.0, r[f"{CCAL}.intrinsic.f_v"], r[f"{CCAL}.intrinsic.c_v"]], [0.0, 0.0, 1.0]]
            try:
                E = _transform(r[f"{CCAL}.extrinsic.transform"], str(path), f"{name} {CCAL}.extrinsic.transform")
            except XmkdDataError as err:
                out[name] = err
                continue
            T = OPENCV_FROM_WAYMO_CAMERA @ np.linalg.inv(E)  # vehicle (= our LiDAR frame) -> OpenCV camera
            out[name] = {"K": K, "T_cam_lidar": matrix_list(T), "width": r[f"{CCAL}.width"],
                         "height": r[f"{CCAL}.height"]}
        return out

    def _row(self, rel: str, column: str, ts: int, extra: tuple = ()) -> dict:
        path = self.path(rel)
        filters = [(TS, "=", ts), *extra]
        rows = _read(path, [column, f"{column.rsplit('.', 1)[0]}.shape"] if column.endswith(".values") else [column],
                     filters).to_pylist()
        if not rows:
            raise XmkdDataError(f"no row for timestamp {ts}", source=str(path))
        return rows[0]

    def _range_image(self, rel: str, prefix: str, ts: int) -> np.ndarray:
        row = self._row(rel, f"{prefix}.values", ts, (("key.laser_name", "=", TOP),))
        shape = row[f"{prefix}.shape"]
        values = np.asarray(row[f"{prefix}.values"])
        if shape is None or len(shape) != 3 or values.size != int(np.prod(shape)):
            raise XmkdDataError(f"range image of {values.size} values does not match its shape {shape}",
                                source=str(self.path(rel)))
        image = values.reshape(shape)
        require_finite(image, str(self.path(rel)), field=f"{prefix} at {ts}", columns=CHANNELS.get(prefix))
        return image

    def _points(self, record: FrameRecord) -> tuple[np.ndarray, np.ndarray]:
        ts = record["meta"]["timestamp_micros"]
        ri = self._range_image(record["lidar"], LIDAR, ts)
        ext, lo, hi, values = self.lidar_calibration(record["calib"])
        incl = beam_inclinations(lo, hi, values, ri.shape[0])
        if len(incl) != ri.shape[0]:
            raise XmkdDataError(f"{len(incl)} beam inclinations for a range image of {ri.shape[0]} rows",
                                source=str(self.path(record["calib"])))
        points, valid = range_image_to_points(ri, ext, incl)
        require_points(len(points), str(self.path(record["lidar"])), f"{LIDAR} at {ts} (no pixel with range > 0)")
        return points, valid

    def check(self, record: FrameRecord) -> FrameRecord:
        raise_scan_error(record)  # a segment whose lidar file could not be read
        rec = dict(record)
        checks = FileChecks()  # every bad file of the frame is listed, not only the first
        got = checks(self._points, rec)
        if got is not None:
            checks(require_finite, got[0], str(self.path(rec["lidar"])), columns=("x", "y", "z", "intensity"))
        sizes = checks(self._check_cameras, rec) or {}
        stats = {"points": 0 if got is None else int(len(got[0])), "cameras": sizes, "boxes": {}}
        ts = rec["meta"]["timestamp_micros"]
        if rec.get("labels"):
            seg = checks(self._labels_at, rec["labels"], ts)
            if seg is None:
                rec["labels"] = None  # not every frame is labelled (or the file is bad: listed)
            elif got is not None:
                raw = seg[..., 1].reshape(-1)[got[1]]
                if checks(self.label_space.from_raw, raw, source=str(self.path(rec["labels"]))) is not None:
                    stats["labels"] = self.histogram(raw)
                    rec["splits"] = [*rec["splits"], *(f"{s}_labelled" for s in rec["splits"])]
        if rec.get("vehicle_pose"):
            rec["ego_pose"] = checks(self._pose_at, rec["vehicle_pose"], ts)
        checks.raise_any()
        rec["stats"] = stats
        return rec

    def _pose_at(self, rel: str, ts: int) -> list[list[float]]:
        """The vehicle pose (world from vehicle, 4x4) at `ts` from the vehicle_pose file `rel`."""
        column = "[VehiclePoseComponent].world_from_vehicle.transform"
        return matrix_list(_transform(self._row(rel, column, ts)[column], str(self.path(rel)), "world_from_vehicle"))

    def _labels_at(self, rel: str, ts: int) -> np.ndarray | None:
        """The segmentation range image at `ts`, or None when the file has no row for it (an unlabelled frame)."""
        try:
            return self._range_image(rel, LABEL, ts)
        except XmkdDataError as err:
            if "no row" not in str(err):
                raise
            return None

    def _check_cameras(self, rec: FrameRecord) -> dict[str, list[int]]:
        """Fill `rec["cameras"]` with the wanted calibrated cameras that have an image at the frame's timestamp, each
        image decoded and its size matched to its calibration; returns name -> [W, H]."""
        rec["cameras"], sizes = {}, {}
        if not self.with_cameras:
            return sizes
        if not rec.get("camera_image"):  # the segment has no images: not silently none
            seg = rec["meta"]["segment"]
            raise XmkdDataError("camera image file is missing: the cameras need it; add it, or pass --cameras none "
                                "(data.cameras: []) for LiDAR only",
                                source=str(self.path(rec["lidar"]).parent.parent / "camera_image" / f"{seg}.parquet"))
        calibrated = self.camera_calibration(rec["camera_calib"])
        checks = FileChecks()
        for name in self.wanted(list(calibrated)):
            if isinstance(calibrated[name], XmkdDataError):
                checks.errors.append(calibrated[name])
        images = self._images(rec, self.wanted(list(calibrated)))
        for name in self.cameras or []:  # a camera asked for by name must be there, not dropped
            if name not in calibrated:
                checks.errors.append(XmkdDataError(
                    f"no calibration row for camera {name} (calibrated: {', '.join(calibrated) or 'none'}); "
                    f"{cameras_hint(list(calibrated))}", source=str(self.path(rec["camera_calib"])),
                    field=name))
            elif name not in images:
                have = [n for n in self._images(rec, list(CAMERA_NAMES.values())) if n in calibrated]
                checks.errors.append(XmkdDataError(
                    f"no {name} image at timestamp {rec['meta']['timestamp_micros']} (this frame has "
                    f"{', '.join(have) or 'no camera'}); {cameras_hint(have)}",
                    source=str(self.path(rec["camera_image"])), field=name))
        checks.raise_any()
        for name, image in images.items():
            cam = calibrated[name]
            sizes[name] = list(_decode(image, f"{self.path(rec['camera_image'])}:{name}").size)
            if sizes[name] != [cam["width"], cam["height"]]:
                raise XmkdDataError(f"{name} image is {sizes[name][0]}x{sizes[name][1]}, its calibration says "
                                    f"{cam['width']}x{cam['height']}", source=str(self.path(rec["camera_image"])))
            rec["cameras"][name] = {**cam, "file": rec["camera_image"]}
        return sizes

    def _images(self, record: FrameRecord, names: list[str]) -> dict[str, bytes]:
        """JPEG bytes of the frame's images from the cameras `names` (those with an image at its timestamp)."""
        rows = _read(self.path(record["camera_image"]), ["key.camera_name", "[CameraImageComponent].image"],
                     [(TS, "=", record["meta"]["timestamp_micros"])]).to_pylist()
        out = {}
        for r in rows:
            name = CAMERA_NAMES.get(r["key.camera_name"], str(r["key.camera_name"]))
            if name in names:
                out[name] = r["[CameraImageComponent].image"]
        return out

    def camera_views(self, record: FrameRecord) -> dict[str, CameraView]:
        names = self.wanted(list(record["cameras"]))
        if not record.get("camera_image") or not names:
            return {}
        path = self.path(record["camera_image"])
        views = {}
        for name, data in self._images(record, names).items():
            image = np.asarray(_decode(data, f"{path}:{name}").convert("RGB"))
            cam = record["cameras"][name]
            views[name] = CameraView(name, image, np.asarray(cam["K"], np.float64), np.asarray(cam["T_cam_lidar"]),
                                     source=f"{path}:{name}")
        return views

    def load(self, record: FrameRecord) -> Frame:
        points, valid = self._points(record)
        labels = instances = None
        if record.get("labels"):
            seg = self._range_image(record["labels"], LABEL, record["meta"]["timestamp_micros"])
            labels = self.label_space.from_raw(seg[..., 1].reshape(-1)[valid], source=str(self.path(record["labels"])))
            instances = seg[..., 0].reshape(-1)[valid].astype(np.int64)
        return self.make_frame(record, points, ("x", "y", "z", "intensity"), labels, instance_ids=instances)
