"""Cross-modal UDA on the synthetic world, 3 seeds: source-only, xMUDA, FtD++, FtD++ + pseudo-labels and the
target-only oracle; 2D / 3D / xM mIoU on every front-camera point of the target's validation split, mean +- std,
the per-seed values and the per-seed paired differences (FtD++ - xMUDA, xMUDA - source-only, FtD++ + PL - FtD++,
target-only - FtD++) with their mean +- std and 95 % interval (Student t over the seeds).

    python -m benchmarks uda                                    # day -> night, seeds 0 1 2; resumable
    python -m benchmarks.bench_uda --scenario city --seeds 0 1 2   # city-a -> city-b (or rig: rig-a -> rig-b)
    python -m benchmarks.bench_uda --scenario rig --seeds 1 --only xmuda ftd   # part of a seed (no table)
    python -m benchmarks.bench_uda --scenario rig --table        # the table of the finished seeds only

Per seed S: a source set (`xmkd synth --preset <source> --seed S`) and a target set (seed S + 100), 40 keyframes
each, front camera at 400x225 (the configs resize to 200x112), then the five rows, each from its config in
configs/{source_only,xmuda,ftd,target_only}/synthetic_<scenario>.yaml, for `STEPS` iterations (the PL row retrains
FtD++ from `xmkd pseudo-label` of the FtD++ run). Outputs in outputs/bench_uda/<scenario>/seed<S>/; the table is
printed and written to outputs/bench_uda/<scenario>/table.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from benchmarks import provenance
from xmkd.data.synthetic.synth import SynthOptions, synthesize_indexed
from xmkd.engine.logging import read_metrics
from xmkd.io import atomic_write_text
from xmkd.runs.predict import pseudo_label_split
from xmkd.runs.train import train_or_reuse

OUT = Path(os.environ.get("XMKD_BENCH_OUT", "outputs/bench_uda"))
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STEPS = 120
SCENARIOS = {"day-night": ("day", "night", "day_night"), "city": ("city-a", "city-b", "city_a_city_b"),
             "rig": ("rig-a", "rig-b", "rig_a_rig_b")}
COLUMNS = ("miou_2d", "miou_3d", "miou_xm")
ROW_RUNS = {"source-only": "source_only", "xMUDA": "xmuda", "FtD++": "ftd", "FtD++ + PL": "ftd_pl",
            "target-only": "oracle"}
# the last two: what the pseudo-labels add, and the gap left to the target-only oracle (target labels)
PAIRS = (("FtD++", "xMUDA"), ("xMUDA", "source-only"), ("FtD++ + PL", "FtD++"), ("target-only", "FtD++"))
# two-sided 95 % quantiles of Student's t by degrees of freedom (more seeds: the normal 1.96 is within 3 %)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def train(config: str, overrides: list[str], run: Path, steps: int) -> dict[str, float]:
    return train_or_reuse(CONFIGS / config, [*overrides, f"train.max_iters={steps}", f"train.val_every={steps}",
                                             f"train.ckpt_every={max(1, steps // 3)}"], run)


def dataset(root: Path, preset: str, seed: int) -> Path:
    return synthesize_indexed(SynthOptions(out=str(root), preset=preset, frames=40, frames_per_scene=4, seed=seed,
                                           image_size=(400, 225), cameras=("CAM_FRONT",), sweeps=False, workers=2),
                              "nuscenes")


def run_seed(seed: int, scenario: str = "day-night", steps: int = STEPS, only: tuple[str, ...] = ()
             ) -> dict[str, dict[str, float]]:
    """The five rows of one seed (`only`: just the runs named, e.g. ("ftd", "ftd_pl"), to spread one seed over
    several processes or machines; finished runs are reused either way)."""
    source_preset, target_preset, slug = SCENARIOS[scenario]
    folder = OUT / scenario / f"seed{seed}"
    source = dataset(folder / source_preset, source_preset, seed)
    target = dataset(folder / target_preset, target_preset, seed + 100)
    provenance.record(folder, {source_preset: source, target_preset: target})
    runs = folder / "runs"
    base = [f"data.root={source}", f"target.root={target}", f"output_dir={runs}", f"seed={seed}",
            "data.num_workers=1", "train.log_every=10"]
    pl = folder / "pl.npz"
    plan = {"source-only": ("source_only",), "xMUDA": ("xmuda",), "FtD++": ("ftd",),
            "FtD++ + PL": ("ftd", "model.lambda_pl=1.0", f"model.pseudo_labels={pl}"), "target-only": ("target_only",)}
    rows = {}
    for row, (method, *extra) in plan.items():
        name = ROW_RUNS[row]
        if only and name not in only:
            continue
        if name == "ftd_pl" and not pl.exists():
            pseudo_label_split(runs / "ftd", "synthetic_train", pl, progress=False)
        rows[row] = train(f"{method}/synthetic_{slug}.yaml", [*base, f"name={name}", *extra], runs / name, steps)
    if not only:
        atomic_write_text(folder / "results.json", json.dumps(rows, indent=1))
    return rows


def paired(values: list[float]) -> str:
    """Per-seed differences (in points) -> "mean ± std [95 % interval]" (std with n - 1; t interval)."""
    d = np.asarray(values, np.float64)
    if len(d) < 2:
        return f"{d.mean():+.1f}"
    sd = d.std(ddof=1)
    half = T95.get(len(d) - 1, 1.96) * sd / np.sqrt(len(d))
    return f"{d.mean():+.1f} ± {sd:.1f} [{d.mean() - half:+.1f}, {d.mean() + half:+.1f}]"


def tables(per_seed: list[dict[str, dict[str, float]]], seeds: tuple[int, ...]) -> str:
    """Markdown: the mean ± population std (ddof 0) table, the per-seed 2D / 3D / xM table, the paired differences."""
    rows = [r for r in per_seed[0] if all(r in p for p in per_seed)]
    lines = ["| row (mean ± std, ddof 0) | 2D mIoU | 3D mIoU | xM mIoU |", "|---|---|---|---|"]
    for row in rows:
        values = [[100 * r[row][c] for r in per_seed] for c in COLUMNS]
        lines.append(f"| {row} | " + " | ".join(f"{np.mean(v):.2f} ± {np.std(v):.2f}" for v in values) + " |")
    lines += ["", "| row: 2D / 3D / xM | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    for row in rows:
        cells = [" / ".join(f"{100 * r[row][c]:.1f}" for c in COLUMNS) for r in per_seed]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    classes = [k[len("iou_xm_"):] for k in per_seed[0][rows[0]] if k.startswith("iou_xm_")]
    if classes:
        lines += ["", f"| row: xM IoU {' / '.join(classes)} | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                  "|---|" + "---|" * len(seeds)]
        for row in rows:
            cells = [" / ".join(f"{100 * r[row].get(f'iou_xm_{c}', float('nan')):.0f}" for c in classes)
                     for r in per_seed]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "| paired difference (points) | " + " | ".join(f"seed {s}" for s in seeds)
              + " | xM mean ± std [95 % interval] | 2D mean ± std | 3D mean ± std |",
              "|---|" + "---|" * (len(seeds) + 3)]
    for a, b in PAIRS:
        if a not in rows or b not in rows:
            continue
        diff = {c: [100 * (r[a][c] - r[b][c]) for r in per_seed] for c in COLUMNS}
        lines.append(f"| {a} − {b} | " + " | ".join(f"{x:+.1f}" for x in diff["miou_xm"]) + " | "
                     + " | ".join(paired(diff[c]).split(" [")[0] if c != "miou_xm" else paired(diff[c])
                                  for c in ("miou_xm", "miou_2d", "miou_3d")) + " |")
    return "\n".join(lines)


def finished_rows(seed: int, scenario: str) -> dict[str, dict[str, float]]:
    """The rows of one seed whose run has validated its last iteration (read from the runs, nothing trained)."""
    runs = OUT / scenario / f"seed{seed}" / "runs"
    rows = {}
    for row, name in ROW_RUNS.items():
        done = [r for r in read_metrics(runs / name) if r.get("kind") == "val" and r.get("step") == STEPS]
        if done:
            rows[row] = {k: v for k, v in done[-1].items() if k not in ("step", "kind", "time")}
    return rows


def main(seeds: tuple[int, ...] = (0, 1, 2), scenario: str = "day-night", reuse_only: bool = False) -> None:
    """Train (or reuse) every row of every seed, print the tables and write them to <OUT>/<scenario>/table.md.
    `reuse_only`: the finished runs of the seeds that have any, nothing trained (rows missing in a seed are left
    out of the table)."""
    if reuse_only:
        found = {s: finished_rows(s, scenario) for s in seeds}
        seeds = tuple(s for s in seeds if found[s])
        per_seed = [found[s] for s in seeds]
        if not per_seed:
            raise SystemExit(f"no finished run under {OUT / scenario}")
    else:
        per_seed = [run_seed(s, scenario) for s in seeds]
    table = tables(per_seed, seeds)
    atomic_write_text(OUT / scenario / "table.md", table + "\n")
    source, target, _ = SCENARIOS[scenario]
    print(f"Cross-modal UDA, synthetic {source} -> {target} (seeds {', '.join(map(str, seeds))}, mIoU %, mean ± std "
          "over seeds; every front-camera point of the validation split)")
    print(table)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="day-night")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", default=[], choices=["source_only", "xmuda", "ftd", "ftd_pl", "oracle"],
                        help="train just these runs of each seed (no table)")
    parser.add_argument("--table", action="store_true", help="train nothing: the table of the finished seeds")
    args = parser.parse_args()
    if args.only:
        for seed in args.seeds:
            print(json.dumps(run_seed(seed, args.scenario, only=tuple(args.only)), indent=1))
    else:
        main(tuple(args.seeds), args.scenario, reuse_only=args.table)
