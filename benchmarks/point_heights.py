"""Heights of each class's points in the global frame, per dataset: count, median and 90th percentile in metres.

    python -m benchmarks.point_heights outputs/bench_uda/rig/seed0/rig-a outputs/bench_uda/rig/seed0/rig-b \\
        --split synthetic_val --label-space nuscenes6

Every point of the split's frames goes through its sweep's `ego_pose` (T_global_lidar). The synthetic world's
ground is the plane z = 0, so there the numbers are heights above the ground: what tells rig-b's walls from rig-a's
(docs/benchmarks.md, rig-a -> rig-b). On a real dataset the global z follows the map's altitude, so compare classes
within one dataset only. Reads each root's prepared index (`<root>/xmkd_index`, written by `xmkd prepare`).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

import numpy as np
from tqdm import tqdm

from xmkd.data.frame import Frame
from xmkd.data.index import IndexedFrames
from xmkd.geometry.transforms import transform_points


def heights_by_class(frames: Iterable[Frame], num_classes: int) -> list[np.ndarray]:
    """Global z of every labelled point, grouped by class (points labelled ignore are left out)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    for frame in frames:
        if frame.labels is None or frame.ego_pose is None:
            raise SystemExit(f"{frame.source or frame.frame_id}: needs point labels and an ego pose")
        z = transform_points(frame.ego_pose, frame.points[:, :3])[:, 2]
        for cls in range(num_classes):
            parts[cls].append(z[frame.labels == cls])
    return [np.concatenate(p) if p else np.zeros(0) for p in parts]


def summary(heights: np.ndarray) -> tuple[int, float, float]:
    """(count, median, 90th percentile); NaN statistics for a class with no points."""
    if heights.size == 0:
        return 0, float("nan"), float("nan")
    return int(heights.size), float(np.median(heights)), float(np.percentile(heights, 90))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", help="dataset roots, each with a prepared xmkd_index")
    ap.add_argument("--split", default="synthetic_val")
    ap.add_argument("--label-space", default=None, help="e.g. nuscenes6 (default: the dataset's own)")
    args = ap.parse_args(argv)
    print("| dataset | class | points | median z (m) | 90th pct z (m) |\n|---|---|---|---|---|")
    for root in args.roots:
        frames = IndexedFrames(f"{root}/xmkd_index", args.split, label_space=args.label_space, root=root)
        names = frames.reader.label_space.class_names
        by_class = heights_by_class(tqdm(frames, desc=root, unit="frame"), len(names))
        for name, heights in zip(names, by_class):
            n, median, p90 = summary(heights)
            print(f"| {root} | {name} | {n} | {median:.2f} | {p90:.2f} |")


if __name__ == "__main__":
    main()
