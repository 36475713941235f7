"""KITTI 3D object detection frames: `<root>/<split>/{velodyne,image_2,calib,label_2}/<id>.*` -> `Frame`.

Boxes come back in the LiDAR frame (x, y, z, dx, dy, dz, yaw); DontCare regions have no 3D box, so they are
kept as 2D boxes in `frame.meta["dontcare_bbox"]`. The KITTI label fields (truncation, occlusion, alpha, 2D
box, score) travel as box attributes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from xmkd.data.frame import Boxes, CameraView, Frame
from xmkd.data.readers.kitti_files import read_calib_file, read_label_file, require_keys
from xmkd.errors import XmkdDataError
from xmkd.geometry.boxes import kitti_camera_to_lidar
from xmkd.geometry.camera import kitti_camera, kitti_rect_transform


def read_velodyne(path: Path) -> np.ndarray:
    """float32 (N, 4) x, y, z, reflectance; a size that is not a multiple of 16 bytes is an error."""
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except FileNotFoundError:
        raise XmkdDataError("point cloud file is missing", source=str(path)) from None
    if raw.size % 4:
        raise XmkdDataError(f"truncated: {raw.size * 4} bytes is not a whole number of 16-byte points",
                            source=str(path))
    return raw.reshape(-1, 4)


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise XmkdDataError("image file is missing", source=str(path)) from None
    except OSError as err:
        raise XmkdDataError(f"unreadable image: {err}", source=str(path)) from None


def read_kitti_object_frame(root: str | Path, frame_id: str, split: str = "training",
                            with_labels: bool = True) -> Frame:
    base = Path(root) / split
    calib_path = base / "calib" / f"{frame_id}.txt"
    calib = read_calib_file(calib_path)
    require_keys(calib, ("P2", "R0_rect", "Tr_velo_to_cam"), calib_path)
    K, T = kitti_camera(calib["P2"], calib["R0_rect"], calib["Tr_velo_to_cam"])
    points = read_velodyne(base / "velodyne" / f"{frame_id}.bin")
    image = read_image(base / "image_2" / f"{frame_id}.png")
    cam = CameraView("image_2", image, K, T, source=str(base / "image_2" / f"{frame_id}.png"))
    boxes = None
    meta: dict = {"split": split, "calib": {k: v.tolist() for k, v in calib.items()}}
    label_path = base / "label_2" / f"{frame_id}.txt"
    if with_labels and label_path.is_file():
        objs = read_label_file(label_path)
        care = objs.names != "DontCare"
        T_rect = kitti_rect_transform(calib["R0_rect"], calib["Tr_velo_to_cam"])  # label boxes live in rect cam 0
        lidar_boxes = kitti_camera_to_lidar(objs.camera_boxes[care], T_rect) if care.any() else np.zeros((0, 7))
        attrs = {"truncation": objs.truncation[care], "occlusion": objs.occlusion[care], "alpha": objs.alpha[care],
                 "bbox": objs.bbox[care]}
        boxes = Boxes(lidar_boxes, objs.names[care], None if objs.score is None else objs.score[care],
                      attributes=attrs, source=str(label_path))
        meta["dontcare_bbox"] = objs.bbox[~care]
    return Frame(frame_id, points, ("x", "y", "z", "intensity"), cameras={"image_2": cam}, boxes=boxes, meta=meta,
                 source=str(base / "velodyne" / f"{frame_id}.bin"))
