"""VirtualKITTI as xMUDA uses it: vkitti3D point files `<root>/vkitti3d_npy/<scene>/<frame>.npy` (N x 7 float64:
X, Y, Z, R, G, B, label; X forward, Y left, Z up) and VKITTI 1.3.1 images
`<root>/vkitti_1.3.1_rgb/<scene>/<weather>/<frame>.png` (weather `clone` by default).

The camera is fixed: K = [[725, 0, 620.5], [0, 725, 187], [0, 0, 1]] and camera = (-Y, -Z, X). Point files named
like the downloadable zip (`0001_00000.npy`) map to image `00000.png`; `vkitti_npy/` is accepted for the
folder name too (xMUDA's README and code disagree). All scenes are in split `train` (xMUDA's source set).
Without cameras (`cameras=[]`) the images are not needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from xmkd.data.frame import Frame
from xmkd.data.readers.base import (
    DatasetReader,
    FrameRecord,
    lfs_error,
    matrix_list,
    require_finite,
    require_points,
)
from xmkd.errors import XmkdDataError

K_VKITTI = np.array([[725.0, 0.0, 620.5], [0.0, 725.0, 187.0], [0.0, 0.0, 1.0]])
T_CAM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def read_npy_points(path) -> np.ndarray:
    """(N, 7) float64 with N > 0; missing, unreadable, Git LFS, misshapen and empty files are errors."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise XmkdDataError("point file is missing", source=str(path)) from None
    except (ValueError, OSError) as err:
        raise lfs_error(path) or XmkdDataError(f"unreadable .npy: {err}", source=str(path)) from None
    if arr.ndim != 2 or arr.shape[1] != 7:
        raise XmkdDataError(f"expected an N x 7 array (X, Y, Z, R, G, B, label), got {arr.shape}", source=str(path))
    require_points(len(arr), str(path))
    return arr


NPY_COLUMNS = ("x", "y", "z", "r", "g", "b", "label")


class VirtualKittiReader(DatasetReader):
    name = "virtualkitti"
    default_label_space = "virtualkitti6"
    camera_names = ("image_2",)
    layout = "vkitti3d_npy/<scene>/<frame>.npy (or vkitti_npy/) with vkitti_1.3.1_rgb/<scene>/clone/<frame>.png"
    weather = "clone"

    def scan(self, splits: Sequence[str] | None = None) -> Iterator[FrameRecord]:
        if splits and "train" not in splits:
            return
        npy_root = next((self.root / d for d in ("vkitti3d_npy", "vkitti_npy") if (self.root / d).is_dir()), None)
        if npy_root is None:
            raise XmkdDataError(f"no vkitti3d_npy/ folder; expected {self.layout}", source=str(self.root))
        for scene in sorted(p for p in npy_root.iterdir() if p.is_dir()):
            for npy in sorted(scene.glob("*.npy")):
                frame = npy.stem.split("_")[-1]
                image = f"vkitti_1.3.1_rgb/{scene.name}/{self.weather}/{frame}.png"
                yield {"id": f"{scene.name}/{npy.stem}", "splits": ["train"],
                       "lidar": str(npy.relative_to(self.root)), "labels": str(npy.relative_to(self.root)),
                       "cameras": {"image_2": {"file": image, "K": matrix_list(K_VKITTI),
                                               "T_cam_lidar": matrix_list(T_CAM_LIDAR)}},
                       "sweeps": [], "meta": {"scene": scene.name, "frame": frame}}

    def check(self, record: FrameRecord) -> FrameRecord:
        rec = dict(record)
        path = self.path(rec["lidar"])
        arr = read_npy_points(path)
        require_finite(arr, str(path), columns=NPY_COLUMNS)
        raw = arr[:, 6]
        if np.any(raw != np.round(raw)):
            raise XmkdDataError("labels (column 7) are not integers", source=str(path), field="labels")
        self.label_space.from_raw(raw.astype(np.int64), source=str(path))
        rec["stats"] = {"points": int(len(arr)), "cameras": self.check_cameras(rec), "boxes": {},
                        "labels": self.histogram(raw.astype(np.int64))}
        return rec

    def load(self, record: FrameRecord) -> Frame:
        path = self.path(record["lidar"])
        arr = read_npy_points(path)
        labels = self.label_space.from_raw(arr[:, 6].astype(np.int64), source=str(path))
        return self.make_frame(record, arr[:, :6].astype(np.float32), ("x", "y", "z", "r", "g", "b"), labels)


# the VKITTI 1.3.1 renderings of every frame (xMUDA / FtD++ draw one per training sample)
WEATHERS = ("clone", "fog", "morning", "overcast", "rain", "sunset")


def weather_image(clone_image: str | Path, weather: str) -> Path:
    """`<root>/vkitti_1.3.1_rgb/<scene>/<weather>/<frame>.png` of the frame whose image is `clone_image`."""
    p = Path(clone_image)
    return p.parent.parent / weather / p.name
