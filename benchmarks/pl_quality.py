"""How good the pseudo-labels of a UDA run are, scored against the target's ground truth (which the UDA runs never
read: the synthetic target sets are labelled, so the labels the PL row trains on can be checked point by point).

    python -m benchmarks.pl_quality outputs/bench_uda/day-night/seed0/pl.npz outputs/bench_uda/day-night/seed0/runs/ftd
    python -m benchmarks.pl_quality --classes PL RUN_DIR     # and the per-class table

PL: a file of `xmkd pseudo-label` (benchmarks.bench_uda writes `<seed>/pl.npz`); RUN_DIR: a run of the same target
data (its config names the target dataset, split and label space; no checkpoint is read). Per branch (2D = the
fused prediction the 2D head trains on, 3D): `points` = the front-camera points of the split that carry a ground
truth label, `kept` = the share that keeps a pseudo-label after the refinement (per-class
min(median probability, 0.9)), `acc all` = the accuracy of the unrefined argmax on every point, `acc kept` = that
of the kept labels, `class mIoU kept` = the mean over classes of the kept labels' IoU with the ground truth (on the
kept points; a class never labelled nor predicted there is left out). `--classes` adds per class: its share of the
ground truth, its share of the kept labels, the kept labels' precision and the recall of the kept labels (the share
of the class's points that keep the right label).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from xmkd.data.labels import get_label_space
from xmkd.data.pseudo_labels import IGNORE, PseudoLabels
from xmkd.runs.run_dir import run_config, run_recipe

BRANCHES = ("2d", "3d")


def confusions(pl_path: str | Path, run_dir: str | Path, split: str | None = None
               ) -> tuple[tuple[str, ...], dict[str, dict[str, np.ndarray]]]:
    """Class names and, per branch, (C, C) confusion counts (rows: ground truth, columns: label) of the unrefined
    argmax ("all") and of the refined labels ("kept"; points set to ignore are not counted), over the points the
    pseudo-label file holds for each frame of the target split (default: the run's target training split).

    Raises SystemExit when a frame of the split has no pseudo-labels or no ground truth."""
    _, cfg = run_config(run_dir)
    recipe = run_recipe(run_dir)(cfg, "cpu")
    frames = recipe.frames(split or cfg.target.train_split)
    pseudo = PseudoLabels.load(pl_path)
    c = pseudo.num_classes
    out = {b: {"all": np.zeros((c, c), np.int64), "kept": np.zeros((c, c), np.int64)} for b in BRANCHES}
    for i in range(len(frames)):
        frame = frames[i]
        if frame.labels is None:
            raise SystemExit(f"{frame.source}: no ground-truth labels to score the pseudo-labels against")
        if frame.frame_id not in pseudo.frames:
            raise SystemExit(f"{pl_path}: no pseudo-labels for frame {frame.frame_id} (made from another split?)")
        raw = pseudo.frames[frame.frame_id]["raw"]
        truth = frame.labels[raw]
        refined = dict(zip(BRANCHES, pseudo.refined(frame.frame_id)))
        for b in BRANCHES:
            predicted = pseudo.frames[frame.frame_id][f"label_{b}"]
            kept = refined[b][raw]
            valid = truth != IGNORE
            out[b]["all"] += np.bincount(truth[valid] * c + predicted[valid], minlength=c * c).reshape(c, c)
            both = valid & (kept != IGNORE)
            out[b]["kept"] += np.bincount(truth[both] * c + kept[both], minlength=c * c).reshape(c, c)
    return tuple(get_label_space(cfg.target.label_space).class_names), out


def summary(conf: dict[str, np.ndarray]) -> dict[str, float]:
    """points, kept share, accuracy of all / kept labels and the kept labels' class mIoU (in [0, 1])."""
    all_, kept = conf["all"], conf["kept"]
    inter = np.diag(kept).astype(np.float64)
    union = kept.sum(0) + kept.sum(1) - inter
    present = union > 0
    return {"points": float(all_.sum()), "kept": kept.sum() / max(1, all_.sum()),
            "acc_all": np.trace(all_) / max(1, all_.sum()), "acc_kept": np.trace(kept) / max(1, kept.sum()),
            "miou_kept": float((inter[present] / union[present]).mean()) if present.any() else float("nan")}


def per_class(conf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per class (C,): share of the ground truth, share of the kept labels, precision and recall of the kept labels."""
    all_, kept = conf["all"].astype(np.float64), conf["kept"].astype(np.float64)
    return {"gt share": all_.sum(1) / max(1.0, all_.sum()), "kept share": kept.sum(0) / max(1.0, kept.sum()),
            "precision": np.diag(kept) / np.maximum(1.0, kept.sum(0)),
            "recall": np.diag(kept) / np.maximum(1.0, all_.sum(1))}


def main(args: list[str]) -> None:
    classes = "--classes" in args
    args = [a for a in args if a != "--classes"]
    if len(args) != 2:
        print(__doc__)
        raise SystemExit(2)
    pl, run = args
    names, conf = confusions(pl, run)
    print(f"pseudo-labels {pl} (target of {run}), in %:\n")
    print("| branch | points | kept | acc all | acc kept | class mIoU kept |\n|---|---|---|---|---|---|")
    for b in BRANCHES:
        s = summary(conf[b])
        print(f"| {b.upper()} | {int(s['points'])} | {100 * s['kept']:.1f} | {100 * s['acc_all']:.1f} | "
              f"{100 * s['acc_kept']:.1f} | {100 * s['miou_kept']:.1f} |")
    if classes:
        for b in BRANCHES:
            rows = per_class(conf[b])
            print(f"\n| {b.upper()} | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
            for key, values in rows.items():
                print(f"| {key} | " + " | ".join(f"{100 * v:.1f}" for v in values) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
