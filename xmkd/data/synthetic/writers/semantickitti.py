"""SemanticKITTI + KITTI odometry colour writer: one sequence per scene.

`sequences/XX/{velodyne/NNNNNN.bin, labels/NNNNNN.label, image_2/NNNNNN.png, calib.txt, poses.txt, times.txt}`.
Labels are uint32 `instance << 16 | raw semantic id`, with the moving-object ids (252-259) for things that
move; `poses.txt` holds camera-0 poses relative to the sequence's first frame (SemanticKITTI's convention).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xmkd.data.synthetic.generate import Keyframe
from xmkd.data.synthetic.surfaces import SURFACES
from xmkd.data.synthetic.writers.common import write_array, write_image
from xmkd.data.synthetic.writers.kitti import FRONT, kitti_calib, velo_points
from xmkd.geometry.transforms import invert_transform
from xmkd.io import atomic_write_text

SURFACE_RAW = np.array([s.semantickitti for s in SURFACES], dtype=np.uint32)
SURFACE_THING = np.array([s.thing for s in SURFACES])
MOVING_ID = {10: 252, 31: 253, 30: 254, 32: 255, 16: 256, 13: 257, 18: 258, 20: 259}


def sequence_name(i: int, val: bool) -> str:
    """Official-looking sequence numbers: validation scenes take 08 first, training 00-07, 09, 10, then 22+."""
    if val:
        return f"{[8, *range(30, 99)][i]:02d}"
    return f"{[0, 1, 2, 3, 4, 5, 6, 7, 9, 10, *range(22, 30), *range(100, 1000)][i]:02d}"


def point_labels(kf: Keyframe) -> np.ndarray:
    scan = kf.sweep.scan
    raw = SURFACE_RAW[scan.surface]
    moving_instances = {o.instance_id for o in kf.objects if o.moving}
    moving = np.isin(scan.instance, list(moving_instances)) & SURFACE_THING[scan.surface]
    for static_id, moving_id in MOVING_ID.items():
        raw[moving & (raw == static_id)] = moving_id
    inst = np.where(SURFACE_THING[scan.surface], scan.instance & 0xFFFF, 0).astype(np.uint32)
    return (inst << np.uint32(16)) | raw


def write_sequence(root: Path, sequence: str, keyframes) -> int:
    """Write one sequence; returns the number of scans."""
    seq = root / "sequences" / sequence
    poses, times = [], []
    T_world_cam0_first = None
    calib = None
    for i, kf in enumerate(keyframes):
        calib = kitti_calib(kf)
        write_array(seq / "velodyne" / f"{i:06d}.bin", velo_points(kf, calib))
        write_array(seq / "labels" / f"{i:06d}.label", point_labels(kf))
        write_image(seq / "image_2" / f"{i:06d}.png", kf.cameras[FRONT].image)
        T_cam0_velo = np.vstack([calib.Tr_velo_to_cam, [0, 0, 0, 1]])
        T_world_cam0 = kf.sweep.T_world_ego @ kf.T_ego_lidar @ invert_transform(calib.T_velo_lidar) @ \
            invert_transform(T_cam0_velo)
        if T_world_cam0_first is None:
            T_world_cam0_first = T_world_cam0
        pose = invert_transform(T_world_cam0_first) @ T_world_cam0
        poses.append(" ".join(f"{v:.9e}" for v in pose[:3].ravel()))
        times.append(f"{kf.timestamp:.6e}")
    if calib is None:
        raise ValueError(f"sequence {sequence} has no frames")
    text = "".join(f"P{i}: " + " ".join(f"{v:.12e}" for v in P.ravel()) + "\n" for i, P in enumerate(calib.P))
    text += "Tr: " + " ".join(f"{v:.12e}" for v in calib.Tr_velo_to_cam.ravel()) + "\n"
    atomic_write_text(seq / "calib.txt", text)
    atomic_write_text(seq / "poses.txt", "".join(p + "\n" for p in poses))
    atomic_write_text(seq / "times.txt", "".join(t + "\n" for t in times))
    return len(poses)
