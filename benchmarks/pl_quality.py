"""How good the pseudo-labels of a UDA run are, scored against the target's ground truth (which the UDA runs never
read: the synthetic target sets are labelled, so the labels the PL row trains on can be checked point by point).

    python -m benchmarks.pl_quality outputs/bench_uda/day-night/seed0/pl.npz outputs/bench_uda/day-night/seed0/runs/ftd
    python -m benchmarks.pl_quality --classes PL RUN_DIR     # and the per-class table
    python -m benchmarks.pl_quality --split synthetic_val PL RUN_DIR   # a file made from another target split

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

import argparse
import sys
from pathlib import Path

import numpy as np

from xmkd.data.labels import get_label_space
from xmkd.data.pseudo_labels import IGNORE, PseudoLabels
from xmkd.errors import XmkdError
from xmkd.eval.submission import keyframe_points
from xmkd.runs.run_dir import run_config, run_recipe

BRANCHES = ("2d", "3d")


def confusions(pl_path: str | Path, run_dir: str | Path, split: str | None = None
               ) -> tuple[tuple[str, ...], dict[str, dict[str, np.ndarray]]]:
    """Class names and, per branch, (C, C) confusion counts (rows: ground truth, columns: label) of the unrefined
    argmax ("all") and of the refined labels ("kept"; points set to ignore are not counted), over the points the
    pseudo-label file holds for each frame of the target split (default: the run's target training split).

    Raises SystemExit naming the file when the run has no target domain, the file is not a pseudo-label file, its
    classes are not the run's, or a frame of the split has no ground truth, no pseudo-labels or another point count
    (a file of another dataset whose frame ids happen to match)."""
    try:
        _, cfg = run_config(run_dir)
        if "target" not in cfg:
            raise SystemExit(f"{run_dir}: recipe {cfg.recipe!r} has no target domain (a UDA run is needed: xmuda, "
                             "ftd, bftd, source_only, target_only)")
        recipe = run_recipe(run_dir)(cfg, "cpu")
        frames = recipe.frames(split or cfg.target.train_split)
        pseudo = PseudoLabels.load(pl_path)  # XmkdDataError for a file that is not one
        space = get_label_space(cfg.target.label_space)
        pseudo.check_classes(space.num_classes, space.name, key="")
    except XmkdError as e:
        raise SystemExit(str(e)) from None
    names = tuple(space.class_names)
    c = pseudo.num_classes
    out = {b: {"all": np.zeros((c, c), np.int64), "kept": np.zeros((c, c), np.int64)} for b in BRANCHES}
    for i in range(len(frames)):
        frame = frames[i]
        if frame.labels is None:
            raise SystemExit(f"{frame.source}: no ground-truth labels to score the pseudo-labels against")
        try:  # the frame is in the file, with the dataset's point count (not a file of another split or dataset)
            refined = dict(zip(BRANCHES, pseudo.refined(frame.frame_id, keyframe_points(frame))))
        except XmkdError as e:
            raise SystemExit(str(e)) from None
        stored = pseudo.frames[frame.frame_id]
        raw = stored["raw"]
        truth = frame.labels[raw]
        for b in BRANCHES:
            predicted = stored[f"label_{b}"]
            kept = refined[b][raw]
            valid = truth != IGNORE
            out[b]["all"] += np.bincount(truth[valid] * c + predicted[valid], minlength=c * c).reshape(c, c)
            both = valid & (kept != IGNORE)
            out[b]["kept"] += np.bincount(truth[both] * c + kept[both], minlength=c * c).reshape(c, c)
    return names, out


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den, NaN where den is 0 (no point to take a share of)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def summary(conf: dict[str, np.ndarray]) -> dict[str, float]:
    """points, kept share, accuracy of all / kept labels and the kept labels' class mIoU (in [0, 1]; NaN where
    there is nothing to take it over, e.g. the accuracy of the kept labels when none is kept)."""
    all_, kept = conf["all"], conf["kept"]
    inter = np.diag(kept).astype(np.float64)
    union = kept.sum(0) + kept.sum(1) - inter
    present = union > 0
    return {"points": float(all_.sum()), "kept": float(_ratio(kept.sum(), all_.sum())),
            "acc_all": float(_ratio(np.trace(all_), all_.sum())), "acc_kept": float(_ratio(np.trace(kept), kept.sum())),
            "miou_kept": float((inter[present] / union[present]).mean()) if present.any() else float("nan")}


def per_class(conf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per class (C,): share of the ground truth, share of the kept labels, precision and recall of the kept labels
    (NaN for the precision of a class never kept and the recall of a class absent from the ground truth)."""
    all_, kept = conf["all"].astype(np.float64), conf["kept"].astype(np.float64)
    return {"gt share": _ratio(all_.sum(1), all_.sum()), "kept share": _ratio(kept.sum(0), kept.sum()),
            "precision": _ratio(np.diag(kept), kept.sum(0)), "recall": _ratio(np.diag(kept), all_.sum(1))}


def percent(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{100 * x:.1f}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pl_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pl", help="a pseudo-label file of `xmkd pseudo-label`")
    parser.add_argument("run", help="a UDA run directory of the same target data")
    parser.add_argument("--split", default=None, help="the target split the file was made from")
    parser.add_argument("--classes", action="store_true", help="the per-class table too")
    args = parser.parse_args(argv)
    names, conf = confusions(args.pl, args.run, args.split)
    print(f"pseudo-labels {args.pl} (target of {args.run}), in %:\n")
    print("| branch | points | kept | acc all | acc kept | class mIoU kept |\n|---|---|---|---|---|---|")
    for b in BRANCHES:
        s = summary(conf[b])
        print(f"| {b.upper()} | {int(s['points'])} | " + " | ".join(
            percent(s[k]) for k in ("kept", "acc_all", "acc_kept", "miou_kept")) + " |")
    if args.classes:
        for b in BRANCHES:
            rows = per_class(conf[b])
            print(f"\n| {b.upper()} | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
            for key, values in rows.items():
                print(f"| {key} | " + " | ".join(percent(v) for v in values) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
