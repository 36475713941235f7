"""Point predictions written the way each benchmark's official tools read them.

- nuScenes lidarseg: `<out>/lidarseg/<eval_set>/<lidar_sample_data_token>_lidarseg.bin`, uint8, one value
  per keyframe point in 1..16, plus `<out>/<eval_set>/submission.json` with the `meta` flags that
  `validate_submission.py` checks.
- SemanticKITTI: `<out>/sequences/<seq>/predictions/<scan:06d>.label`, uint32 raw label ids (instance bits 0).
- Any other dataset: `<out>/<frame_id>.npy` with the class ids of the label space.
Every file is written atomically, so an interrupted `xmkd predict` can simply be run again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from xmkd.data.frame import Frame
from xmkd.data.labels import LabelSpace
from xmkd.errors import XmkdError
from xmkd.io import atomic_write_bytes, atomic_write_text


def keyframe_points(frame: Frame) -> int:
    """Points of the keyframe scan itself (readers append sweep points after them)."""
    return int(frame.meta.get("num_keyframe_points", frame.num_points))


class SubmissionWriter:
    def __init__(self, dataset: str, out: str | Path, space: LabelSpace, eval_set: str,
                 use_camera: bool = False):
        self.dataset, self.out, self.space, self.eval_set = dataset, Path(out), space, eval_set
        self.use_camera = use_camera
        if dataset == "nuscenes" and space.name != "nuscenes16":
            raise XmkdError(f"nuScenes lidarseg submissions use the nuscenes16 label space, not {space.name!r}")
        if dataset == "semantickitti" and space.name != "semantickitti19":
            raise XmkdError(f"SemanticKITTI submissions use the semantickitti19 label space, not {space.name!r}")

    def path(self, frame_id: str, meta: dict[str, Any]) -> Path:
        """Where the predictions of a frame go (from its index record's id and meta)."""
        if self.dataset == "nuscenes":
            return self.out / "lidarseg" / self.eval_set / f"{meta['lidar_token']}_lidarseg.bin"
        if self.dataset == "semantickitti":
            return self.out / "sequences" / meta["sequence"] / "predictions" / f"{int(meta['scan']):06d}.label"
        return self.out / f"{frame_id}.npy"

    def write(self, frame: Frame, classes: np.ndarray) -> Path:
        """`classes`: one class id per keyframe point of `frame`, in the order the dataset stores them."""
        return self.write_classes(frame.frame_id, frame.meta, classes, keyframe_points(frame), frame.source)

    def write_classes(self, frame_id: str, meta: dict[str, Any], classes: np.ndarray, num_points: int,
                      source: str = "") -> Path:
        if classes.shape != (num_points,):
            raise XmkdError(f"{source or frame_id}: {classes.shape[0]} predictions for {num_points} points")
        path = self.path(frame_id, meta)
        if self.dataset == "nuscenes":
            ids = self.space.to_submission(classes)
            if ids.min(initial=1) < 1 or ids.max(initial=1) > 16:
                raise XmkdError(f"{path}: nuScenes lidarseg predictions must lie in 1..16")
            data = ids.astype(np.uint8).tobytes()
        elif self.dataset == "semantickitti":
            data = self.space.to_submission(classes).astype(np.uint32).tobytes()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, classes.astype(np.int64))
            tmp.replace(path)
            return path
        return atomic_write_bytes(path, data, fsync=False)

    def finish(self) -> None:
        if self.dataset == "nuscenes":
            meta = {"use_camera": self.use_camera, "use_lidar": True, "use_radar": False, "use_map": False,
                    "use_external": False}
            atomic_write_text(self.out / self.eval_set / "submission.json", json.dumps({"meta": meta}, indent=1))
