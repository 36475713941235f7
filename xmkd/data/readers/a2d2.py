"""A2D2 semantic segmentation, front-centre camera, as xMUDA uses it.

Layout: `<root>/cams_lidars.json`, `<root>/class_list.json`,
`<root>/<seq>/{lidar,camera,label}/cam_front_center/<datetime>_{lidar,camera,label}_frontcenter_<id>.{npz,png,png}`.
The lidar `.npz` holds `points` (N, 3) and the undistorted image coordinates `row`, `col` of every point
(and `reflectance` when present). Labels are the colour-coded label image, undistorted with the camera's
calibration (`Lens` Telecam: OpenCV's pinhole model; Fisheye: the equidistant model) and read at (row, col),
colours matched exactly against `class_list.json` (unmatched = the extra index 55, as xMUDA).

The `.npz` gives no extrinsic calibration, so `T_cam_lidar` is fitted to the file's own point -> pixel pairs
(linear least squares with the known undistorted `K`), which makes projection agree with `row`/`col`.
Splits (xMUDA): `test` = sequence 20180807_145028, `train` = every other sequence.

Without cameras (`cameras=[]`) the camera images are not read; `cams_lidars.json` stays required, because the point
labels come from the label image through the camera's undistortion.
"""

from __future__ import annotations

import functools
import json
import zipfile
from collections.abc import Iterator, Sequence

import numpy as np

from xmkd.data.frame import Frame
from xmkd.data.labels import A2D2_RAW, hex_to_rgb
from xmkd.data.readers.base import (
    DatasetReader,
    FileChecks,
    FrameRecord,
    also_reporting,
    image_size,
    lfs_error,
    matrix_list,
    read_image,
    read_text,
    require_finite,
    require_points,
    shared_part,
)
from xmkd.errors import XmkdDataError

TEST_SEQUENCES = ("20180807_145028",)


def undistort_source(u: np.ndarray, v: np.ndarray, K_new: np.ndarray, K_orig: np.ndarray, dist: np.ndarray,
                     lens: str) -> tuple[np.ndarray, np.ndarray]:
    """For pixels (u, v) of the undistorted image (camera K_new), their position in the original distorted
    image — the map OpenCV's `undistort` / `fisheye.undistortImage` sample from."""
    x = (u - K_new[0, 2]) / K_new[0, 0]
    y = (v - K_new[1, 2]) / K_new[1, 1]
    d = np.zeros(5)
    d[: min(5, len(dist))] = np.asarray(dist, np.float64).ravel()[:5]
    if lens.lower() == "fisheye":
        r = np.hypot(x, y)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1 + d[0] * t2 + d[1] * t2**2 + d[2] * t2**3 + d[3] * t2**4)
        scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        xd, yd = x * scale, y * scale
    else:
        k1, k2, p1, p2, k3 = d
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd * K_orig[0, 0] + K_orig[0, 2], yd * K_orig[1, 1] + K_orig[1, 2]


def fit_extrinsic(points: np.ndarray, rows: np.ndarray, cols: np.ndarray, K: np.ndarray) -> np.ndarray:
    """T_cam_lidar (4, 4) that best projects `points` (N, 3) to pixels (col, row) with intrinsics K: a linear
    DLT on normalised coordinates, then the nearest rotation (SVD) and its translation."""
    if len(points) < 6:
        raise ValueError("need at least 6 point-pixel pairs to fit the camera pose")
    uv1 = np.linalg.solve(K, np.vstack([cols, rows, np.ones(len(cols))])).T  # normalised image coordinates
    X = np.column_stack([points, np.ones(len(points))])
    zero = np.zeros_like(X)
    A = np.vstack([np.hstack([X, zero, -uv1[:, :1] * X]), np.hstack([zero, X, -uv1[:, 1:2] * X])])
    _, _, vt = np.linalg.svd(A)
    P = vt[-1].reshape(3, 4)
    if np.median(X @ P[2]) < 0:  # points must be in front of the camera
        P = -P
    U, S, Vt = np.linalg.svd(P[:, :3])
    R = U @ Vt
    t = P[:, 3] / S.mean()
    if np.linalg.det(R) < 0:
        R, t = -R, -t
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


class A2D2Reader(DatasetReader):
    name = "a2d2"
    default_label_space = "a2d2_10"
    camera_names = ("cam_front_center",)
    layout = "<sequence>/lidar/cam_front_center/<datetime>_lidar_frontcenter_<9 digits>.npz with camera/, label/"
    lidar_only_layout = "<sequence>/lidar/cam_front_center/<datetime>_lidar_frontcenter_<9 digits>.npz with label/"

    @functools.cached_property
    def calibration(self) -> dict:
        path = self.root / "cams_lidars.json"
        text = read_text(path, "calibration")
        try:
            cam = json.loads(text)["cameras"]["front_center"]
            out = {"K": np.asarray(cam["CamMatrix"], np.float64), "K_orig": np.asarray(cam["CamMatrixOriginal"], float),
                   "dist": np.asarray(cam["Distortion"], np.float64).ravel(), "lens": str(cam.get("Lens", "Telecam"))}
        except (KeyError, ValueError, TypeError) as err:
            raise XmkdDataError(f"missing or malformed calibration key {err}", source=str(path)) from None
        if out["K"].shape != (3, 3) or out["K_orig"].shape != (3, 3):
            raise XmkdDataError("CamMatrix and CamMatrixOriginal must be 3x3", source=str(path))
        for key, field in (("K", "CamMatrix"), ("K_orig", "CamMatrixOriginal"), ("dist", "Distortion")):
            if not np.isfinite(out[key]).all():  # else the extrinsic fit fails later ("SVD did not converge")
                raise XmkdDataError("NaN/Inf; expected finite numbers", source=str(path),
                                    field=f"cameras.front_center.{field}")
        return out

    @functools.cached_property
    def color_table(self) -> dict[int, int]:
        """24-bit colour -> class index in class_list.json order (must match xMUDA's A2D2 class order)."""
        path = self.root / "class_list.json"
        text = read_text(path, "class list")
        try:
            items = list(json.loads(text).items())
        except (ValueError, AttributeError) as err:
            raise XmkdDataError(f"expected a JSON object of colour: class name: {err}", source=str(path)) from None
        names = [n for _, n in items]
        if names != [n for _, n in A2D2_RAW]:
            raise XmkdDataError("class names or their order differ from the A2D2 class list xmkd knows",
                                source=str(path))
        return {(lambda c: (c[0] << 16) | (c[1] << 8) | c[2])(hex_to_rgb(h)): i for i, (h, _) in enumerate(items)}

    def scan(self, splits: Sequence[str] | None = None) -> Iterator[FrameRecord]:
        for seq in sorted(p for p in self.root.iterdir() if (p / "lidar" / "cam_front_center").is_dir()):
            split = "test" if seq.name in TEST_SEQUENCES else "train"
            if splits and split not in splits:
                continue
            for npz in sorted((seq / "lidar" / "cam_front_center").glob("*.npz")):
                base = npz.stem
                dt, fid = base[:14], base[-9:]
                if not (dt.isdigit() and fid.isdigit()):
                    continue  # not an A2D2 frame name: <YYYYMMDDhhmmss>_lidar_frontcenter_<9 digits>
                cam = f"{seq.name}/camera/cam_front_center/{dt}_camera_frontcenter_{fid}.png"
                yield {"id": f"{seq.name}/{fid}", "splits": [split], "lidar": str(npz.relative_to(self.root)),
                       "labels": f"{seq.name}/label/cam_front_center/{dt}_label_frontcenter_{fid}.png",
                       "cameras": {"cam_front_center": {"file": cam}}, "sweeps": [],
                       "meta": {"sequence": seq.name, "frame": fid}}

    def _npz(self, record: FrameRecord) -> dict[str, np.ndarray]:
        path = self.path(record["lidar"])
        try:
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise XmkdDataError("lidar file is missing", source=str(path)) from None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:  # a truncated .npz is a bad zip
            raise lfs_error(path) or XmkdDataError(f"unreadable .npz: {err}", source=str(path)) from None
        for key in ("points", "row", "col"):
            if key not in data:
                raise XmkdDataError(f"missing array {key!r} (have {sorted(data)})", source=str(path), field=key)
        n = len(data["points"])
        if data["points"].ndim != 2 or data["points"].shape[1] != 3 or len(data["row"]) != n or len(data["col"]) != n:
            raise XmkdDataError(f"points {data['points'].shape}, row {data['row'].shape}, col {data['col'].shape} "
                                "do not match", source=str(path))
        require_points(n, str(path), "points")
        for key in ("points", "row", "col", "reflectance"):
            if key not in data:
                continue
            if data[key].shape[:1] != (n,):
                raise XmkdDataError(f"shape {data[key].shape} for {n} points", source=str(path), field=key)
            require_finite(data[key].reshape(n, -1), str(path), field=key,
                           columns=("x", "y", "z") if key == "points" else None)
        return data

    def _labels(self, record: FrameRecord, data: dict[str, np.ndarray], label: np.ndarray | None = None
                ) -> np.ndarray:
        """Raw class index per point, read from the undistorted label image (`label`, else read from the record's
        file) at (row, col)."""
        if label is None:
            label = read_image(self.path(record["labels"]))
        c = self.calibration
        rows = data["row"].astype(np.int64)
        cols = data["col"].astype(np.int64)
        su, sv = undistort_source(cols.astype(np.float64), rows.astype(np.float64), c["K"], c["K_orig"], c["dist"],
                                  c["lens"])
        h, w = label.shape[:2]
        su = np.clip(np.round(su).astype(np.int64), 0, w - 1)
        sv = np.clip(np.round(sv).astype(np.int64), 0, h - 1)
        rgb = label[sv, su].astype(np.int64)
        code = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        table = self.color_table
        return np.array([table.get(int(x), len(table)) for x in code], dtype=np.int64)

    def check(self, record: FrameRecord) -> FrameRecord:
        rec = dict(record)
        _, shared = shared_part(lambda: (self.calibration, self.color_table))  # the dataset's two JSON files
        sizes = {}
        checks = FileChecks()  # every bad file of the frame is listed, not only the first
        with also_reporting(shared):  # the frame's own files first
            data = checks(self._npz, rec)
            if self.with_cameras:
                cam = rec["cameras"]["cam_front_center"]
                size = checks(image_size, self.path(cam["file"]))
                sizes["cam_front_center"] = list(size or ())
            label = checks(read_image, self.path(rec["labels"]))
            checks.raise_any()
        if shared is not None:
            raise shared
        if self.with_cameras:
            K = self.calibration["K"]
            try:
                T = fit_extrinsic(data["points"].astype(np.float64), data["row"], data["col"], K)
            except ValueError as err:  # fewer than 6 points
                raise XmkdDataError(str(err), source=str(self.path(rec["lidar"]))) from None
            rec["cameras"] = {"cam_front_center": {**cam, "K": matrix_list(K),
                                                   "T_cam_lidar": matrix_list(T)}}
        else:
            rec["cameras"] = {}
        raw = self._labels(rec, data, label)
        rec["stats"] = {"points": int(len(data["points"])), "cameras": sizes, "boxes": {},
                        "labels": self.histogram(raw)}
        return rec

    def camera_views(self, record: FrameRecord):
        views = super().camera_views(record)
        c = self.calibration
        for view in views.values():  # undistort the image so that it matches K
            h, w = view.image.shape[:2]
            vv, uu = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
            su, sv = undistort_source(uu, vv, c["K"], c["K_orig"], c["dist"], c["lens"])
            su = np.clip(np.round(su).astype(np.int64), 0, w - 1)
            sv = np.clip(np.round(sv).astype(np.int64), 0, h - 1)
            view.image = np.ascontiguousarray(view.image[sv, su])
        return views

    def load(self, record: FrameRecord) -> Frame:
        data = self._npz(record)
        raw = self._labels(record, data)
        labels = self.label_space.from_raw(raw, source=str(self.path(record["labels"])))
        refl = data.get("reflectance")
        points = np.column_stack([data["points"], refl if refl is not None else np.zeros(len(data["points"]))])
        frame = self.make_frame(record, points.astype(np.float32), ("x", "y", "z", "intensity"), labels)
        frame.meta["pixel_rc"] = np.column_stack([data["row"], data["col"]]).astype(np.float32)
        return frame
