"""What the oracle-depth student lifts: on a KITTI-format world's validation frames, the share of its feature cells
that hold a LiDAR depth (the rest go to the out-of-range bin: nothing lifted), overall and inside the cells a Car's
projected 3D box covers, and how many of those Car cells carry a depth outside the car's own depth extent (a cell
whose points are partly or wholly the road or the background behind: the one-hot bin then puts the car's image
features there). Per-cell depth as the students' targets (`model.depth_target: mean` of the points in the cell).

    OMP_NUM_THREADS=1 python -m benchmarks.hsrdn_oracle_cells --data outputs/bench_hsrdn_v2/seed0/kitti [--every 4]

The Car cells are the whole cells of each box's 2D bounding rectangle (its 8 projected corners), so they include
some road and background by construction: an upper bound on the mixed cells, not a count of them.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.bench_hsrdn import CONFIGS, GRID, STUDENT
from xmkd.config import load_config
from xmkd.geometry.boxes import box_corners
from xmkd.recipes import get_recipe


def box_cells(box: np.ndarray, lidar_to_image: np.ndarray, stride: float, shape: tuple[int, int]
              ) -> tuple[slice, slice, np.ndarray] | None:
    """(rows, cols) of the whole `stride`-pixel cells of a (Hf, Wf) = `shape` grid that the 2D bounding rectangle of
    the 8 projected corners of the LiDAR box (7,) touches, and the corners' camera depths (8,); None when a corner
    lies behind the camera (depth <= 0.5 m) or the rectangle misses the grid. lidar_to_image (3, 4) = K [R | t]."""
    uvw = np.c_[box_corners(np.asarray(box, np.float64)[None])[0], np.ones(8)] @ np.asarray(lidar_to_image).T
    if (uvw[:, 2] <= 0.5).any():
        return None
    uv = uvw[:, :2] / uvw[:, 2:]
    (u0, v0), (u1, v1) = np.floor(uv.min(0) / stride).astype(int), np.ceil(uv.max(0) / stride).astype(int)
    rows, cols = slice(max(v0, 0), min(v1, shape[0])), slice(max(u0, 0), min(u1, shape[1]))
    return (rows, cols, uvw[:, 2]) if rows.start < rows.stop and cols.start < cols.stop else None


def oracle_cells(data: str, every: int = 4, margin: float = 0.5) -> dict[str, float]:
    """Shares over every `every`-th validation frame of `data` with the HSRDN benchmark's grid and student settings:
    `cells` (cells with a LiDAR depth), `car_cells` (of the Car cells), `car_off` / `car_off_2m` (Car cells with a
    depth more than `margin` / 2 m outside the car's camera-depth extent)."""
    recipe_cls = get_recipe("hsrdn")
    cfg = load_config(CONFIGS / "cmkd" / "oracle_depth_synthetic_bev.yaml",
                      [f"data.root={data}", "data.num_workers=0", "model.teacher_checkpoint=''", *GRID, *STUDENT],
                      schema=recipe_cls.schema)
    dataset = recipe_cls(cfg, torch.device("cpu")).val_dataset()
    total = held = car = car_held = 0
    off: list[float] = []
    for i in range(0, len(dataset), every):
        s = dataset[i]
        depth = np.asarray(s["depth"])  # (Hf, Wf) metres per feature cell, 0 = no LiDAR point in it
        hf, wf = depth.shape
        stride = s["image"].shape[0] / hf  # the sample image is (H, W, 3)
        total, held = total + depth.size, held + int((depth > 0).sum())
        for box in s["boxes"][s["labels"] == 0]:  # class 0: Car
            found = box_cells(box, s["lidar_to_image"], stride, (hf, wf))
            if found is None:
                continue
            rows, cols, z = found
            cells = depth[rows, cols]
            car, car_held = car + cells.size, car_held + int((cells > 0).sum())
            d = cells[cells > 0]
            off += list(np.maximum(np.maximum(z.min() - d, d - z.max()), 0.0))
    gap = np.asarray(off)
    return {"cells": held / max(total, 1), "car_cells": car_held / max(car, 1),
            "car_off": float((gap > margin).mean()) if gap.size else float("nan"),
            "car_off_2m": float((gap > 2.0).mean()) if gap.size else float("nan"), "car_cell_count": car}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a KITTI-format world (outputs/bench_hsrdn*/seed<S>/kitti)")
    parser.add_argument("--every", type=int, default=4, help="every n-th validation frame")
    args = parser.parse_args()
    r = oracle_cells(args.data, args.every)
    print(f"{args.data}: cells with a LiDAR depth {r['cells']:.1%}; of the {r['car_cell_count']} Car cells "
          f"{r['car_cells']:.1%}, with a depth > 0.5 m outside the car's depth extent {r['car_off']:.1%} "
          f"(> 2 m {r['car_off_2m']:.1%})")
