"""Dataset readers: each turns one dataset's on-disk format into `Frame`s (see `base.py` for the contract).

`READERS` maps the dataset names used by configs and the CLI to reader classes; modules are imported when
a reader is asked for, so an optional backend (pyarrow for Waymo, nuscenes-devkit for nuScenes tables)
matters only to the dataset that needs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xmkd.errors import XmkdNameError

READERS: dict[str, str] = {
    "nuscenes": "xmkd.data.readers.nuscenes:NuScenesReader",
    "semantickitti": "xmkd.data.readers.semantic_kitti:SemanticKittiReader",
    "kitti_object": "xmkd.data.readers.kitti_object:KittiObjectReader",
    "kitti_raw": "xmkd.data.readers.kitti_raw:KittiRawReader",
    "waymo": "xmkd.data.readers.waymo:WaymoReader",
    "a2d2": "xmkd.data.readers.a2d2:A2D2Reader",
    "virtualkitti": "xmkd.data.readers.virtual_kitti:VirtualKittiReader",
}


def reader_class(dataset: str):
    try:
        module, cls = READERS[dataset].split(":")
    except KeyError:
        raise XmkdNameError(f"unknown dataset {dataset!r}; known: {', '.join(READERS)}") from None
    return getattr(importlib.import_module(module), cls)


def make_reader(dataset: str, root: str | Path, label_space: str | None = None, cameras: Sequence[str] | None = None,
                sweeps: int = 0, meta: dict[str, Any] | None = None):
    return reader_class(dataset)(root, label_space, cameras, sweeps, meta)
