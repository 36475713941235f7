"""KITTI evaluator speed on a val-sized set: 3,769 frames of generated labels and detections.

    python -m benchmarks kitti_eval

Generates ground truth (cars, pedestrians, cyclists, vans, DontCare, random truncation/occlusion) and noisy
detections with false positives, then times `xmkd.eval.kitti.evaluate_folders` end to end (reading the files,
2D / BEV / 3D overlaps, the full protocol for 3 classes x 3 difficulties x 2 overlap settings x R11/R40).
The first call in a fresh environment also compiles the numba kernels (cached on disk afterwards).
Goal: <= 5 s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def generate(root: Path, frames: int = 3769, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    names = ["Car", "Car", "Car", "Pedestrian", "Cyclist", "Van", "DontCare", "Person_sitting"]
    (root / "gt").mkdir(parents=True)
    (root / "pred").mkdir()
    for f in range(frames):
        gt, pred = [], []
        for _ in range(rng.integers(1, 12)):
            name = names[rng.integers(len(names))]
            x1, y1, w, h = rng.uniform(0, 1100), rng.uniform(100, 300), rng.uniform(10, 150), rng.uniform(10, 120)
            dims = rng.uniform([1.4, 1.5, 3.0], [1.8, 1.9, 4.5])
            loc = rng.uniform([-15, 1.4, 5], [15, 1.9, 60])
            ry = rng.uniform(-np.pi, np.pi)
            gt.append(f"{name} {rng.choice([0, 0.2, 0.4]):.2f} {rng.integers(0, 3)} {ry:.2f} {x1:.2f} {y1:.2f} "
                      f"{x1 + w:.2f} {y1 + h:.2f} {dims[0]:.2f} {dims[1]:.2f} {dims[2]:.2f} {loc[0]:.2f} {loc[1]:.2f} "
                      f"{loc[2]:.2f} {ry:.2f}")
            if name != "DontCare" and rng.random() < 0.8:
                j = loc + rng.normal(0, 0.3, 3)
                b = np.array([x1, y1, x1 + w, y1 + h]) + rng.normal(0, 3, 4)
                pred.append(f"{name} 0 0 {ry:.2f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f} {dims[0]:.2f} "
                            f"{dims[1]:.2f} {dims[2]:.2f} {j[0]:.2f} {j[1]:.2f} {j[2]:.2f} "
                            f"{ry + rng.normal(0, 0.1):.2f} {rng.uniform():.3f}")
        for _ in range(rng.integers(0, 4)):
            x1, y1 = rng.uniform(0, 1100), rng.uniform(100, 300)
            pred.append(f"Car 0 0 0 {x1:.2f} {y1:.2f} {x1 + 50:.2f} {y1 + 40:.2f} 1.5 1.6 3.9 "
                        f"{rng.uniform(-15, 15):.2f} 1.6 {rng.uniform(5, 60):.2f} 0.3 {rng.uniform():.3f}")
        (root / "gt" / f"{f:06d}.txt").write_text("".join(x + "\n" for x in gt))
        (root / "pred" / f"{f:06d}.txt").write_text("".join(x + "\n" for x in pred))


def main(frames: int = 3769) -> None:
    from xmkd.eval.kitti import evaluate_folders

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, frames)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            results = evaluate_folders(root / "gt", root / "pred")
            times.append(time.perf_counter() - start)
    print(f"KITTI evaluation of {frames} frames (all classes, metrics, difficulties, R11/R40, strict/loose)")
    print(f"{'run':>4} {'seconds':>8}")
    for i, t in enumerate(times):
        print(f"{i + 1:>4} {t:>8.2f}")
    print(f"Car 3D R40 moderate (strict) on this random set: {results['Car/3d/R40/strict/moderate']:.2f}")


if __name__ == "__main__":
    main()
