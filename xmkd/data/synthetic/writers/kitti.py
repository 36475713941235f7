"""KITTI-family writers: the calibration of a synthetic rig in KITTI's terms, KITTI object (with labels
computed from the rendering) and KITTI raw (unlabelled frames, date/drive folders).

KITTI's LiDAR frame ("velo") is x forward, y left, z up at the LiDAR. Camera 2 (the colour image written as
`image_2`) is the rig's front camera; the rectified reference camera 0 sits 6 cm to its right, as in KITTI, so
`P2 = K [I | t]` with `t = (0.06, 0, 0)` and `R0_rect = I`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmkd.data.synthetic.generate import Keyframe, object_coverage
from xmkd.data.synthetic.objects import CATEGORIES
from xmkd.data.synthetic.writers.common import write_array, write_image
from xmkd.geometry.boxes import lidar_to_kitti_camera, rotation_y_to_alpha
from xmkd.geometry.transforms import invert_transform
from xmkd.io import atomic_write_text

FRONT = "CAM_FRONT"
CAM0_OFFSET = 0.06  # metres from camera 2 to the reference camera 0 along camera x
MAX_LABEL_DEPTH = 70.0  # farther objects become DontCare regions
MIN_LABEL_HEIGHT = 20.0  # pixels; smaller objects become DontCare regions


@dataclass
class KittiCalib:
    P: list[np.ndarray]  # P0..P3 (3, 4)
    R0_rect: np.ndarray  # (3, 3)
    Tr_velo_to_cam: np.ndarray  # (3, 4), velo -> rectified camera 0
    Tr_imu_to_velo: np.ndarray  # (3, 4)
    T_velo_lidar: np.ndarray  # (4, 4) the rig's LiDAR frame -> KITTI velo frame (a rotation)
    K: np.ndarray

    def text(self) -> str:
        rows = [f"P{i}: " + " ".join(f"{v:.12e}" for v in P.ravel()) for i, P in enumerate(self.P)]
        rows.append("R0_rect: " + " ".join(f"{v:.12e}" for v in self.R0_rect.ravel()))
        rows.append("Tr_velo_to_cam: " + " ".join(f"{v:.12e}" for v in self.Tr_velo_to_cam.ravel()))
        rows.append("Tr_imu_to_velo: " + " ".join(f"{v:.12e}" for v in self.Tr_imu_to_velo.ravel()))
        return "\n".join(rows) + "\n"


def kitti_calib(kf: Keyframe) -> KittiCalib:
    K = kf.K[FRONT]
    T_velo_lidar = np.eye(4)
    T_velo_lidar[:3, :3] = kf.T_ego_lidar[:3, :3]  # axes of the ego (x fwd, y left, z up), origin at the LiDAR
    T_cam2_velo = kf.T_cam_lidar(FRONT) @ invert_transform(T_velo_lidar)
    T_cam0_cam2 = np.eye(4)
    T_cam0_cam2[0, 3] = -CAM0_OFFSET
    T_cam0_velo = T_cam0_cam2 @ T_cam2_velo
    baselines = [0.0, -0.54, CAM0_OFFSET, CAM0_OFFSET - 0.54]  # t_x of P0..P3, as in KITTI
    P = [np.hstack([K, (K @ np.array([b, 0.0, 0.0]))[:, None]]) for b in baselines]
    imu = np.hstack([np.eye(3), np.array([[-0.81], [0.32], [-0.8]])])
    return KittiCalib(P, np.eye(3), T_cam0_velo[:3], imu, T_velo_lidar, K)


def velo_points(kf: Keyframe, calib: KittiCalib) -> np.ndarray:
    """(N, 4) float32 x, y, z (velo frame), reflectance in [0, 1]."""
    pts = kf.sweep.scan.points
    xyz = pts[:, :3].astype(np.float64) @ calib.T_velo_lidar[:3, :3].T
    refl = pts[:, 3] / kf.rig.lidar_intensity_scale
    return np.column_stack([xyz, refl]).astype(np.float32)


def label_lines(kf: Keyframe, calib: KittiCalib) -> list[str]:
    """KITTI `label_2` lines for the front camera, from the rendering."""
    coverage = object_coverage(kf, FRONT, max_distance=MAX_LABEL_DEPTH + 30)
    T_cam0_velo = np.vstack([calib.Tr_velo_to_cam, [0, 0, 0, 1]])
    T_cam0_lidar = T_cam0_velo @ calib.T_velo_lidar
    boxes = kf.boxes_lidar()
    lines = []
    for obj, box in zip(kf.objects, boxes):
        kitti_class = CATEGORIES[obj.kind].kitti
        cov = coverage.get(obj.instance_id)
        if not kitti_class or cov is None or cov.inside == 0 or cov.visible_fraction < 0.02:
            continue
        x1, y1, x2, y2 = cov.bbox
        cam = lidar_to_kitti_camera(box[None], T_cam0_lidar)[0]
        if y2 - y1 < 12:
            continue
        if cam[2] > MAX_LABEL_DEPTH or y2 - y1 < MIN_LABEL_HEIGHT:
            lines.append(f"DontCare -1 -1 -10 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} -1 -1 -1 -1000 -1000 -1000 -10")
            continue
        vf = cov.visible_fraction
        occlusion = 0 if vf >= 0.8 else 1 if vf >= 0.4 else 2
        alpha = rotation_y_to_alpha(cam[6], cam[0], cam[2])
        lines.append(f"{kitti_class} {cov.truncation:.2f} {occlusion} {alpha:.2f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} "
                     f"{cam[3]:.2f} {cam[4]:.2f} {cam[5]:.2f} {cam[0]:.2f} {cam[1]:.2f} {cam[2]:.2f} "
                     f"{np.arctan2(np.sin(cam[6]), np.cos(cam[6])):.2f}")
    return lines


def write_object_frame(root: Path, frame_id: str, kf: Keyframe, labelled: bool = True) -> None:
    """training/{velodyne,image_2,calib,label_2}/<frame_id>.*"""
    calib = kitti_calib(kf)
    write_array(root / "training" / "velodyne" / f"{frame_id}.bin", velo_points(kf, calib))
    write_image(root / "training" / "image_2" / f"{frame_id}.png", kf.cameras[FRONT].image)
    atomic_write_text(root / "training" / "calib" / f"{frame_id}.txt", calib.text())
    if labelled:
        lines = label_lines(kf, calib)
        atomic_write_text(root / "training" / "label_2" / f"{frame_id}.txt", "".join(f"{x}\n" for x in lines))


def raw_calib_text(calib: KittiCalib, image_size: tuple[int, int]) -> tuple[str, str, str]:
    """(calib_cam_to_cam.txt, calib_velo_to_cam.txt, calib_imu_to_velo.txt) of a KITTI raw date folder."""
    w, h = image_size
    fmt = " ".join
    cam = ["calib_time: 01-Jan-2026 00:00:00", "corner_dist: 9.950000e-02"]
    for i in range(4):
        K = calib.P[i][:, :3]
        cam += [f"S_{i:02d}: {w:.6e} {h:.6e}", f"K_{i:02d}: " + fmt(f"{v:.6e}" for v in K.ravel()),
                f"D_{i:02d}: " + fmt(["0.000000e+00"] * 5), f"R_{i:02d}: " + fmt(f"{v:.6e}" for v in np.eye(3).ravel()),
                f"T_{i:02d}: " + fmt(f"{v:.6e}" for v in calib.P[i][:, 3] / K[0, 0] * np.array([1, 0, 0])),
                f"S_rect_{i:02d}: {w:.6e} {h:.6e}",
                f"R_rect_{i:02d}: " + fmt(f"{v:.6e}" for v in calib.R0_rect.ravel()),
                f"P_rect_{i:02d}: " + fmt(f"{v:.6e}" for v in calib.P[i].ravel())]
    tr = calib.Tr_velo_to_cam
    velo = ["calib_time: 01-Jan-2026 00:00:00", "R: " + fmt(f"{v:.6e}" for v in tr[:, :3].ravel()),
            "T: " + fmt(f"{v:.6e}" for v in tr[:, 3]), "delta_f: 0.000000e+00 0.000000e+00",
            "delta_c: 0.000000e+00 0.000000e+00"]
    imu = ["calib_time: 01-Jan-2026 00:00:00", "R: " + fmt(f"{v:.6e}" for v in calib.Tr_imu_to_velo[:, :3].ravel()),
           "T: " + fmt(f"{v:.6e}" for v in calib.Tr_imu_to_velo[:, 3])]
    return "\n".join(cam) + "\n", "\n".join(velo) + "\n", "\n".join(imu) + "\n"


RAW_DATE = "2026_01_01"


def write_raw_frame(root: Path, drive: int, index: int, kf: Keyframe) -> str:
    """raw/<date>/<date>_drive_<dddd>_sync/{image_02,velodyne_points}/data/<10 digits>.*; returns the
    eigen-style list line `<date>/<drive folder> <index> l`."""
    calib = kitti_calib(kf)
    folder = f"{RAW_DATE}_drive_{drive:04d}_sync"
    base = root / "raw" / RAW_DATE / folder
    write_image(base / "image_02" / "data" / f"{index:010d}.png", kf.cameras[FRONT].image)
    write_array(base / "velodyne_points" / "data" / f"{index:010d}.bin", velo_points(kf, calib))
    return f"{RAW_DATE}/{folder} {index:010d} l"


def finish_raw(root: Path, kf: Keyframe, drives: dict[int, list[float]]) -> None:
    """Calibration files of the date folder and per-drive timestamps (seconds since the drive start)."""
    calib = kitti_calib(kf)
    h, w = kf.cameras[FRONT].image.shape[:2]
    cam, velo, imu = raw_calib_text(calib, (w, h))
    date_dir = root / "raw" / RAW_DATE
    atomic_write_text(date_dir / "calib_cam_to_cam.txt", cam)
    atomic_write_text(date_dir / "calib_velo_to_cam.txt", velo)
    atomic_write_text(date_dir / "calib_imu_to_velo.txt", imu)
    for drive, times in drives.items():
        base = date_dir / f"{RAW_DATE}_drive_{drive:04d}_sync"
        stamps = "".join(f"2026-01-01 00:{int(t // 60):02d}:{t % 60:012.9f}\n" for t in times)
        for sensor in ("image_02", "velodyne_points"):
            atomic_write_text(base / sensor / "timestamps.txt", stamps)
