"""Tiny datasets in every reader's on-disk format, written by the tests themselves, and the faults the reader tests
put into them.

`build(dataset, root)` writes two or more frames of `dataset` under `root` (the synthetic world through `xmkd synth`
for nuScenes, SemanticKITTI, KITTI object and raw; by hand from FORMATS.md for Waymo v2, A2D2 and VirtualKITTI).
`FILES[dataset][kind]` is a glob (relative to the root) whose first match is a file of that kind of the first
frame, e.g. `FILES["semantickitti"]["times"]`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from xmkd.data.labels import A2D2_RAW, hex_to_rgb

LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 1843200\n")

WAYMO_SEGMENT = "10023947602400723454_1120_000_1140_000"
A2D2_SEQUENCE = "20180810_142822"

FILES: dict[str, dict[str, str]] = {
    "nuscenes": {"points": "samples/LIDAR_TOP/*.pcd.bin", "sweep": "sweeps/LIDAR_TOP/*.pcd.bin",
                 "labels": "lidarseg/v1.0-mini/*.bin", "image": "samples/CAM_FRONT/*.jpg",
                 "table": "v1.0-mini/sample_data.json"},
    "semantickitti": {"points": "sequences/00/velodyne/000000.bin", "labels": "sequences/00/labels/000000.label",
                      "image": "sequences/00/image_2/000000.png", "calib": "sequences/00/calib.txt",
                      "poses": "sequences/00/poses.txt", "times": "sequences/00/times.txt"},
    "kitti_object": {"points": "training/velodyne/000000.bin", "image": "training/image_2/000000.png",
                     "calib": "training/calib/000000.txt", "labels": "training/label_2/000000.txt"},
    "kitti_raw": {"points": "raw/*/*_sync/velodyne_points/data/0000000000.bin",
                  "image": "raw/*/*_sync/image_02/data/0000000000.png", "calib": "raw/*/calib_cam_to_cam.txt",
                  "calib_velo": "raw/*/calib_velo_to_cam.txt"},
    "waymo": {"points": "training/lidar/*.parquet", "calib": "training/lidar_calibration/*.parquet",
              "labels": "training/lidar_segmentation/*.parquet", "image": "training/camera_image/*.parquet",
              "camera_calib": "training/camera_calibration/*.parquet", "poses": "training/vehicle_pose/*.parquet"},
    "a2d2": {"points": "*/lidar/cam_front_center/*.npz", "image": "*/camera/cam_front_center/*.png",
             "labels": "*/label/cam_front_center/*.png", "calib": "cams_lidars.json", "classes": "class_list.json"},
    "virtualkitti": {"points": "vkitti3d_npy/0001/*.npy", "image": "vkitti_1.3.1_rgb/0001/clone/*.png"},
}

# What a LiDAR-only copy of each dataset lacks (globs removed from the root): images and camera calibration.
CAMERA_FILES: dict[str, list[str]] = {
    "nuscenes": ["samples/CAM_*"],
    "semantickitti": ["sequences/*/image_2", "sequences/*/calib.txt"],
    "kitti_object": ["training/image_2"],
    "kitti_raw": ["raw/*/*_sync/image_02", "raw/*/calib_cam_to_cam.txt", "raw/*/calib_velo_to_cam.txt"],
    "waymo": ["training/camera_image", "training/camera_calibration"],
    "a2d2": ["*/camera"],
    "virtualkitti": ["vkitti_1.3.1_rgb"],
}
CAMERA_OF = {"nuscenes": "CAM_FRONT", "semantickitti": "image_2", "kitti_object": "image_2", "kitti_raw": "image_2",
             "waymo": "FRONT", "a2d2": "cam_front_center", "virtualkitti": "image_2"}


def first(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    assert found, f"no {pattern} under {root}"
    return found[0]


def build(dataset: str, root: Path) -> Path:
    """Two or more frames of `dataset` under `root` (a new folder)."""
    if dataset in ("nuscenes", "semantickitti", "kitti_object", "kitti_raw"):
        from xmkd.data.synthetic.synth import SynthOptions, synthesize

        fmt = {"kitti_object": "kitti", "kitti_raw": "kitti"}.get(dataset, dataset)
        synthesize(SynthOptions(out=str(root), preset="day" if fmt == "nuscenes" else "rig-b", format=fmt, frames=2,
                                frames_per_scene=2, image_size=(48, 24), cameras=("CAM_FRONT",),
                                unlabelled=2 if dataset == "kitti_raw" else 0), progress=False)
        return root
    return {"waymo": waymo, "a2d2": a2d2, "virtualkitti": virtual_kitti}[dataset](root)["root"]


def write_image(path: Path, size: tuple[int, int], seed: int = 0) -> None:
    """A plain image of `size` (W, H) (its colour from `seed`) in the format of the file name's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(int(v) for v in np.random.default_rng(seed).integers(0, 255, 3))).save(path)


def waymo(root: Path, image_sizes: tuple[tuple[int, int], ...] = ((32, 24),)) -> dict:
    """Waymo v2 components (FORMATS.md 4.1) for one segment per entry of `image_sizes` (W, H), each with two TOP
    LiDAR frames (4 x 8 range images, segmentation labels, vehicle poses) and a FRONT image at the first one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    h, w, ts = 4, 8, [1000000, 1100000]
    rng = np.random.default_rng(0)
    base = root / "training"
    ranges = rng.uniform(2, 40, size=(2, h, w)).astype(np.float32)
    ranges[:, 0, :3] = -1.0  # no return
    ri = np.stack([ranges, rng.uniform(0, 1, size=(2, h, w)), np.zeros((2, h, w)), np.zeros((2, h, w))], -1)
    sem, inst = rng.integers(0, 23, size=(2, h, w)), rng.integers(0, 5, size=(2, h, w))
    ext = np.eye(4)
    ext[:3, :3] = [[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]]
    ext[:3, 3] = [1.43, 0.0, 2.18]
    cam_ext = np.eye(4)
    cam_ext[:3, 3] = [1.5, 0.0, 2.0]  # the camera looks along vehicle +x
    segments = [WAYMO_SEGMENT] + [f"{WAYMO_SEGMENT[:-1]}{i}" for i in range(1, len(image_sizes))]
    for seg, (iw, ih) in zip(segments, image_sizes):
        def write(component, table, seg=seg):
            (base / component).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(table), base / component / f"{seg}.parquet")

        key = {"key.segment_context_name": [seg, seg], "key.frame_timestamp_micros": ts,
               "key.laser_name": pa.array([1, 1], pa.int8())}
        write("lidar", {**key, "[LiDARComponent].range_image_return1.values": [r.ravel().tolist() for r in ri],
                        "[LiDARComponent].range_image_return1.shape": [[h, w, 4]] * 2})
        write("lidar_segmentation", {**key, "[LiDARSegmentationLabelComponent].range_image_return1.values":
                                     [np.stack([i, s], -1).ravel().tolist() for i, s in zip(inst, sem)],
                                     "[LiDARSegmentationLabelComponent].range_image_return1.shape": [[h, w, 2]] * 2})
        write("lidar_calibration", {
            "key.segment_context_name": [seg], "key.laser_name": pa.array([1], pa.int8()),
            "[LiDARCalibrationComponent].extrinsic.transform": [ext.ravel().tolist()],
            "[LiDARCalibrationComponent].beam_inclination.min": [-0.3],
            "[LiDARCalibrationComponent].beam_inclination.max": [0.05],
            "[LiDARCalibrationComponent].beam_inclination.values": pa.array([None], pa.list_(pa.float64()))})
        jpg = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, size=(ih, iw, 3), dtype=np.uint8)).save(jpg, format="JPEG")
        write("camera_image", {"key.segment_context_name": [seg], "key.frame_timestamp_micros": [ts[0]],
                               "key.camera_name": pa.array([1], pa.int8()),
                               "[CameraImageComponent].image": [jpg.getvalue()]})
        write("camera_calibration", {
            "key.segment_context_name": [seg], "key.camera_name": pa.array([1], pa.int8()),
            **{f"[CameraCalibrationComponent].intrinsic.{k}": [v] for k, v in
               (("f_u", 20.0), ("f_v", 20.0), ("c_u", iw / 2), ("c_v", ih / 2))},
            "[CameraCalibrationComponent].extrinsic.transform": [cam_ext.ravel().tolist()],
            "[CameraCalibrationComponent].width": [iw], "[CameraCalibrationComponent].height": [ih]})
        write("vehicle_pose", {"key.segment_context_name": [seg, seg], "key.frame_timestamp_micros": ts,
                               "[VehiclePoseComponent].world_from_vehicle.transform": [np.eye(4).ravel().tolist()] * 2})
    return {"root": root, "ranges": ranges, "range_images": ri, "semantic": sem, "instance": inst, "extrinsic": ext,
            "shape": (h, w)}


def a2d2(root: Path, frames: int = 2, image_size: tuple[int, int] = (96, 60), K: np.ndarray | None = None,
         distortion: list[float] | None = None) -> dict:
    """A2D2 front-centre frames (FORMATS.md 5.1) whose label image is car on the left half and road on the right;
    the points project with `T_cam_lidar` and `K` to their (row, col)."""
    W, H = image_size
    K = np.array([[0.9 * W, 0, W / 2], [0, 0.9 * W, H / 2], [0, 0, 1]]) if K is None else K
    seq = root / A2D2_SEQUENCE
    for sub in ("lidar", "camera", "label"):
        (seq / sub / "cam_front_center").mkdir(parents=True)
    (root / "cams_lidars.json").write_text(json.dumps({"cameras": {"front_center": {
        "CamMatrix": K.tolist(), "CamMatrixOriginal": K.tolist(), "Distortion": [distortion or [0, 0, 0, 0, 0]],
        "Lens": "Telecam", "Resolution": [W, H]}}}))
    (root / "class_list.json").write_text(json.dumps({h: n for h, n in A2D2_RAW}))
    rng = np.random.default_rng(2)
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]
    T[:3, 3] = [0.1, 1.2, -0.3]
    label = np.zeros((H, W, 3), np.uint8)
    label[:, : W // 2] = hex_to_rgb("#ff0000")  # Car 1 -> car
    label[:, W // 2:] = hex_to_rgb("#ff00ff")  # RD normal street -> road
    out = []
    for f in range(frames):
        pts = np.column_stack([rng.uniform(5, 40, 300), rng.uniform(-8, 8, 300), rng.uniform(-1, 2, 300)])
        uvw = (pts @ T[:3, :3].T + T[:3, 3]) @ K.T
        col, row = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
        ok = (col >= 0) & (col < W) & (row >= 0) & (row < H)
        name = f"20180810142822_{{}}_frontcenter_{91 + f:09d}"
        np.savez(seq / "lidar" / "cam_front_center" / f"{name.format('lidar')}.npz", points=pts[ok], row=row[ok],
                 col=col[ok], reflectance=np.ones(ok.sum()))
        Image.fromarray(label).save(seq / "label" / "cam_front_center" / f"{name.format('label')}.png")
        write_image(seq / "camera" / "cam_front_center" / f"{name.format('camera')}.png", (W, H), f)
        out.append({"points": pts[ok], "row": row[ok], "col": col[ok]})
    return {"root": root, "frames": out, "T": T, "K": K}


def virtual_kitti(root: Path, frames: int = 2, image_size: tuple[int, int] = (1242, 375)) -> dict:
    """vkitti3D point files (N x 7 float64, FORMATS.md 5.2) and their VKITTI 1.3.1 images."""
    rng = np.random.default_rng(1)
    out = []
    for f in range(frames):
        pts = np.column_stack([rng.uniform(5, 30, 200), rng.uniform(-5, 5, 200), rng.uniform(-1.5, 1, 200),
                               rng.uniform(0, 255, (200, 3)), rng.integers(0, 14, 200)]).astype(np.float64)
        path = root / "vkitti3d_npy" / "0001" / f"0001_{f:05d}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, pts)
        write_image(root / "vkitti_1.3.1_rgb" / "0001" / "clone" / f"{f:05d}.png", image_size, f)
        out.append(pts)
    return {"root": root, "frames": out}
