"""HSRDN / CMKD on the synthetic KITTI-format world, 3 seeds: the SECOND teacher, the monocular student trained on
ground truth only, CMKD, HSRDN and an oracle-depth student (`oracle_hist`: CMKD lifting each image cell by its LiDAR
pixels' shares of the depth bins, meant as the upper bound of the lifting); every student through the released two-stage
chain (BEV stage, then detection stage from its checkpoint). KITTI AP_R40 at the moderate difficulty, 3D and BEV,
per class, at the strict (Car 0.7, Ped / Cyc 0.5) and the loose (Car 0.5, Ped / Cyc 0.25) overlaps, each beside its
ceiling; per-seed paired differences HSRDN - CMKD, CMKD - GT-only, oracle - CMKD with mean, std and a 95 %
t-interval. Optional rows (`--rows hsrdn_rel0 hsrdn_grad1 hsrdn_grad32`: HSRDN at relation weights 0, and with
xmkd's relation gradient at weights 1 / 32; `oracle`: the one-hot oracle, each cell lifted to the bin of its mean
LiDAR depth, the default oracle row until 2026-12-03, then also paired with the histogram one) appear in the
table, with their paired difference to CMKD, once a run of theirs has finished.

    python -m benchmarks hsrdn                        # resumable: finished runs are reused
    python -m benchmarks.bench_hsrdn --seeds 0        # some seeds only (the table covers the seeds given)
    python -m benchmarks.bench_hsrdn --report         # trains nothing: the table of the runs finished so far
    python -m benchmarks.bench_hsrdn --rows oracle hsrdn_grad32  # some rows only; oracle: the one-hot oracle;
                                                      # hsrdn_rel0: HSRDN at relation weights 0; hsrdn_grad1 /
                                                      # hsrdn_grad32: with the relation gradient at weights 1 / 32
                                                      # (none of these three in the default rows)
    XMKD_BENCH_OUT=outputs/bench_hsrdn_smoke python -m benchmarks.bench_hsrdn --seeds 0 --frames 12 --steps 2 2 2
                                                      # the whole pipeline in a few minutes (numbers meaningless)

Per seed S: `xmkd synth --format kitti --frames 400 --seed S --val-fraction 0.5` at 640x192 (KITTI's aspect); the
classes reported are those with >= 41 valid moderate validation boxes in every seed (counted with the evaluator's
filters), so the official 41-point recall sampling can reach 100; the table prints each class's ceiling, the AP
of the ground-truth boxes inside the point range written and scored like a detector's. The grid (`GRID`): 0.0625 m
teacher voxels over [2, -16, -3, 34, 16, 1] (a 64 x 64 BEV map of 0.5 m cells, near KITTI's 0.32-0.4 m: cars get
~3 positive anchors each, measured and printed; 1.6 m cells gave them one). Teacher
`configs/lidar_det/synthetic.yaml` for `TEACHER_STEPS` iterations; students `configs/{hsrdn,cmkd}/*synthetic_bev.yaml`
for `BEV_STEPS` then `*synthetic.yaml` for `DET_STEPS` (validated every ceil(DET_STEPS / 3) iterations and at the
end: the learning curve). Outputs in outputs/bench_hsrdn/seed<S>/; the table is printed and written to
outputs/bench_hsrdn/table.md.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from benchmarks import provenance
from benchmarks.teacher_grid import positive_counts
from xmkd.data.collate import in_range
from xmkd.data.gt_database import DEFAULT_FOLDER, build_box_database
from xmkd.data.index import IndexedFrames
from xmkd.data.synthetic.synth import SynthOptions, synthesize_indexed
from xmkd.engine.logging import read_metrics
from xmkd.eval.kitti import CLASSES, MAX_OCCLUSION, MAX_TRUNCATION, MIN_HEIGHT, evaluate_folders, read_annotations
from xmkd.io import atomic_write_text
from xmkd.recipes.lidar_det import kitti_lines
from xmkd.runs.run_dir import run_config
from xmkd.runs.train import train_or_reuse

OUT = Path(os.environ.get("XMKD_BENCH_OUT", "outputs/bench_hsrdn"))
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
POINT_RANGE = [2.0, -16.0, -3.0, 34.0, 16.0, 1.0]
VOXEL = 0.0625  # teacher voxels, metres (BEV cells: 8 voxels)
GRID = [f"data.voxel_size={VOXEL}", f"data.point_range=[{','.join(str(v) for v in POINT_RANGE)}]"]
STUDENT = ["model.student.depth_max=34.0", "model.student.grid_z=10"]  # LID bins over the range, 0.4 m z-cells
# (name, slug, stage-1 config, stage-2 config, needs the teacher, overrides of both stages)
STUDENTS = [("student, GT only", "mono_gt", "hsrdn/mono_gt_synthetic_bev.yaml", "hsrdn/mono_gt_synthetic.yaml", False,
             []),
            ("CMKD", "cmkd", "cmkd/synthetic_bev.yaml", "cmkd/synthetic.yaml", True, []),
            ("HSRDN", "hsrdn", "hsrdn/synthetic_bev.yaml", "hsrdn/synthetic.yaml", True, []),
            # the oracle: each image cell lifted by its LiDAR pixels' shares of the depth bins. The one-hot bin of a
            # cell's mean depth (`oracle`, optional below; the default row until 2026-12-03) puts a car edge's
            # features between the car and the road behind it and stayed below CMKD on 2 seeds of 3
            ("oracle-depth student, bin histogram", "oracle_hist", "cmkd/oracle_hist_synthetic_bev.yaml",
             "cmkd/oracle_hist_synthetic.yaml", True, [])]
# rows trained only when asked for (--rows): HSRDN at relation weights 0 (no relation term at all; the default
# `hsrdn` row computes them as released, without gradient: the same training), and xmkd's redesign, in which the
# relation terms train the student (model.relation_gradient; the default before 2026-12-02), at weights 1 and 32
VARIANTS = [("HSRDN, relation weights 0", "hsrdn_rel0", "hsrdn/synthetic_bev.yaml", "hsrdn/synthetic.yaml", True,
             ["model.weights.distance=0.0", "model.weights.angle=0.0"])]
VARIANTS += [(f"HSRDN, relation gradient, weights {w:g}", f"hsrdn_grad{w:g}", "hsrdn/synthetic_bev.yaml",
              "hsrdn/synthetic.yaml", True, ["model.relation_gradient=true", f"model.weights.distance={w}",
                                             f"model.weights.angle={w}"]) for w in (1.0, 32.0)]
# and the one-hot oracle: each image cell lifted to the one depth bin of its LiDAR pixels' mean depth
VARIANTS += [("oracle-depth student", "oracle", "cmkd/oracle_depth_synthetic_bev.yaml",
              "cmkd/oracle_depth_synthetic.yaml", True, [])]
SLUGS = {s[1]: s for s in STUDENTS + VARIANTS}  # every row a student trains, default or optional
TEACHER = "teacher (SECOND)"
FRAMES, VAL_FRACTION, MIN_VALID = 400, 0.5, 41
# 300 detection iterations left every student at 0-16 Car AP3D loose, on its training frames too (underfit, not
# overfit: GT-only seed 0 scored 12.4 on them, 12.5 on validation); 1500 is where they learn (docs/benchmarks.md)
TEACHER_STEPS, BEV_STEPS, DET_STEPS = 1200, 600, 1500
# detection-stage validations (every ceil(DET_STEPS / 3) iterations and at the end): the students' learning curves.
# A validation draws from the random streams training uses, so a run validated only at its end ends elsewhere
CURVE_POINTS = 3
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # two-sided 95 % t quantiles by degrees of freedom


def metric_keys(cls: str) -> list[tuple[str, str]]:
    """(column title, metrics.jsonl key) of one class: AP3D / APBEV R40 moderate, strict and loose."""
    c = cls.lower()
    return [(f"{cls} {m} {o}", f"{c}_{k}_r40_moderate{s}") for o, s in (("strict", ""), ("loose", "_loose"))
            for m, k in (("3D", "3d"), ("BEV", "bev"))]


def valid_moderate(data: Path) -> dict[str, int]:
    """Validation ground-truth boxes per class that the KITTI evaluator counts at the moderate difficulty (its
    occlusion, truncation and 2D-height filters)."""
    ids = (data / "ImageSets" / "val.txt").read_text().split()
    a = read_annotations(data / "training" / "label_2", ids, False)
    keep = (a.occlusion <= MAX_OCCLUSION[1]) & (a.truncation <= MAX_TRUNCATION[1]) & (
        a.bbox[:, 3] - a.bbox[:, 1] > MIN_HEIGHT[1])
    return {cls: int(((a.name == i) & keep).sum()) for i, cls in enumerate(CLASSES)}


def ceilings(data: Path) -> dict[str, float]:
    """AP (R40 and R11, moderate) of a perfect detector on the grid: every validation box whose centre lies in the
    point range, score 1, written by the detectors' KITTI writer and scored by the evaluator."""
    frames = IndexedFrames(data / "xmkd_index", "val", None, cameras=["image_2"], root=str(data))
    with tempfile.TemporaryDirectory() as tmp:
        for frame in frames:
            cam = frame.cameras["image_2"]
            b = frame.boxes
            keep = np.isin(b.names, CLASSES) & in_range(b.boxes[:, :3], POINT_RANGE)
            meta = {"K": cam.K, "T_cam_lidar": cam.T_cam_lidar, "image_size": cam.image_size,
                    "T_rect_lidar": frame.meta.get("T_rect_lidar", cam.T_cam_lidar)}
            lines = kitti_lines(b.boxes[keep], np.ones(int(keep.sum())), list(b.names[keep]), meta)
            Path(tmp, f"{Path(frame.frame_id).name}.txt").write_text("".join(line + "\n" for line in lines))
        ap = evaluate_folders(data / "training" / "label_2", tmp, data / "ImageSets" / "val.txt")
    return {f"{cls}/R{r}": ap[f"{cls}/3d/R{r}/strict/moderate"] for cls in CLASSES for r in (40, 11)}


def positive_anchors(data: Path) -> dict[str, float]:
    """Mean number of positive anchors per training box of each class on the benchmark's grid, with the teacher's
    own anchors and assignment (`benchmarks.teacher_grid`)."""
    counts, _ = positive_counts(data, GRID)
    return {n: float(np.mean(v)) if v else float("nan") for n, v in counts.items()}


def train(config: str, overrides: list[str], run: Path) -> dict[str, float]:
    return train_or_reuse(CONFIGS / config, overrides, run, progress=False)


def check_rows(rows: tuple[str, ...]) -> None:
    """ValueError unless `rows` is a sequence of keys of `SLUGS` (a bare string is not), naming the unknown ones."""
    unknown = [repr(rows)] if isinstance(rows, str) else sorted(set(rows) - set(SLUGS))
    if unknown:
        raise ValueError(f"rows: a sequence of {', '.join(SLUGS)}; unknown {', '.join(unknown)}")


def run_seed(seed: int, steps: tuple[int, int, int], frames: int = FRAMES,
             rows: tuple[str, ...] = tuple(s[1] for s in STUDENTS)) -> dict:
    """Train (or reuse) seed `seed`'s data, teacher and the students named by slug in `rows` (keys of `SLUGS`);
    returns `report_seed`'s dict (every row of the seed that has finished, asked for now or before) with the final
    losses. ValueError for an unknown slug, before anything is trained."""
    check_rows(rows)
    teacher_steps, bev_steps, det_steps = steps
    folder = OUT / f"seed{seed}"
    data = folder / "kitti"
    synthesize_indexed(SynthOptions(out=str(data), format="kitti", frames=frames, frames_per_scene=4, seed=seed,
                                    image_size=(640, 192), workers=1, val_fraction=VAL_FRACTION), "kitti_object",
                       progress=False)
    if not (data / DEFAULT_FOLDER / "database.json").is_file():  # the teacher's gt-sampling database
        build_box_database(IndexedFrames(data / "xmkd_index", "train", None, cameras=(), root=str(data)),
                           data / DEFAULT_FOLDER,
                           progress=False)
    provenance.record(folder, {"kitti": data})
    info_file = folder / "data.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
    else:
        info = {"valid_moderate": valid_moderate(data), "ceiling": ceilings(data),
                "positive_anchors": positive_anchors(data)}
        atomic_write_text(info_file, json.dumps(info, indent=1))
    runs = folder / "runs"
    base = [f"data.root={data}", f"output_dir={runs}", f"seed={seed}", "data.num_workers=0", "train.log_every=20",
            *GRID]
    train("lidar_det/synthetic.yaml", [*base, "name=teacher", f"train.max_iters={teacher_steps}",
                                                       f"train.val_every={teacher_steps}", "train.ckpt_every=200"],
                          runs / "teacher")
    ckpt = runs / "teacher" / "checkpoints" / "last.pt"
    for _, slug, bev_config, det_config, distils, extra in (SLUGS[s] for s in rows):
        common = [*base, *STUDENT, "train.ckpt_every=100", *([f"model.teacher_checkpoint={ckpt}"] if distils else []),
                  *extra]
        train(bev_config, [*common, f"name={slug}_bev", f"train.max_iters={bev_steps}", f"train.val_every={bev_steps}"],
              runs / f"{slug}_bev")
        train(det_config, [*common, f"name={slug}", f"train.max_iters={det_steps}",
                           f"train.val_every={math.ceil(det_steps / CURVE_POINTS)}",
                           f"model.student.init={runs / f'{slug}_bev' / 'checkpoints' / 'last.pt'}"], runs / slug)
    result = report_seed(seed, steps)
    result["final_losses"] = {slug: last_losses(runs / slug) for name, slug, *_ in SLUGS.values()
                              if name in result["rows"]}
    atomic_write_text(folder / "results.json", json.dumps(result, indent=1))
    return result


def finished(run: Path, steps: int) -> dict[str, float] | None:
    """The validation metrics a run logged at its last iteration `steps`, or None when it has not got there."""
    done = [r for r in read_metrics(run) if r.get("kind") == "val" and r.get("step") == steps]
    return {k: v for k, v in done[-1].items() if k not in ("step", "kind", "time")} if done else None


def other_relations(run: Path, extra: list[str]) -> bool:
    """Whether `run` trained its relation terms otherwise than the row's overrides `extra` say: a run saved before
    `model.relation_gradient` existed (read as true, `ADDED_KEYS`) in the folder of the default `hsrdn` row, whose
    relation terms now send no gradient. Such a run is not the row's and is left out of the table."""
    if not (run / "config.yaml").is_file():
        return False
    m = run_config(run)[1].model
    weights = getattr(m, "weights", None)
    if weights is None or not (weights.distance or weights.angle):
        return False
    asked = OmegaConf.from_dotlist(list(extra)).get("model", {}).get("relation_gradient", False)  # schema default
    return bool(m.relation_gradient) != bool(asked)


def report_seed(seed: int, steps: tuple[int, int, int]) -> dict | None:
    """What `run_seed` returns, from the runs of seed `seed` that have finished (trains nothing; a row still
    training or not started is left out); None when the seed's data part is not there yet."""
    folder = OUT / f"seed{seed}"
    if not (folder / "data.json").is_file():
        return None
    runs, (teacher_steps, bev_steps, det_steps) = folder / "runs", steps
    rows = {TEACHER: finished(runs / "teacher", teacher_steps)}
    # a row's runs, unless one of its two stages trained the relation terms otherwise than the row does
    own = {name: slug for name, slug, *_, extra in SLUGS.values()
           if not any(other_relations(runs / f"{slug}{stage}", extra) for stage in ("_bev", ""))}
    stage1 = {name: finished(runs / f"{slug}_bev", bev_steps) for name, slug in own.items()}
    rows.update({name: finished(runs / slug, det_steps) for name, slug in own.items()})
    return {**json.loads((folder / "data.json").read_text()), "steps": list(steps),
            "rows": {k: v for k, v in rows.items() if v is not None},
            "stage1": {k: v for k, v in stage1.items() if v is not None},
            "curves": {name: curve(runs / slug, det_steps) if name in own else [] for name, slug, *_ in SLUGS.values()}}


def curve(run: Path, steps: int) -> list[tuple[int, float]]:
    """(step, Car AP3D R40 moderate loose) of each validation a run logged, in order; [] for a run trained for
    another number of iterations than `steps` (its saved config.yaml says so)."""
    if (run / "config.yaml").is_file() and run_config(run)[1].train.max_iters != steps:
        return []
    return [(r["step"], r["car_3d_r40_moderate_loose"]) for r in read_metrics(run)
            if r.get("kind") == "val" and "car_3d_r40_moderate_loose" in r]


def last_losses(run: Path, window: int = 5) -> dict[str, float]:
    """Mean of the last `window` logged training losses of a run."""
    logs = [r for r in read_metrics(run) if r.get("kind") == "train"][-window:]
    keys = {k for r in logs for k in r if k not in ("step", "kind", "time") and not k.startswith(("lr_", "data_"))}
    return {k: float(np.mean([r[k] for r in logs if k in r])) for k in sorted(keys)}


def paired(a: list[float], b: list[float]) -> str:
    """Per-seed differences a - b, their mean +- std and a 95 % t-interval of the mean."""
    d = np.asarray(a) - np.asarray(b)
    per = " / ".join("n/a" if np.isnan(v) else f"{v:+.1f}" for v in d)
    d = d[~np.isnan(d)]  # a seed where either row has not finished (`--report`)
    if len(d) == 0:
        return f"{per} (not measured)"
    if len(d) < 2:
        return f"{per} (one seed)"
    sd = float(d.std(ddof=1))
    half = T95.get(len(d) - 1, 1.96) * sd / math.sqrt(len(d))
    return f"{per}; {d.mean():+.2f} ± {sd:.2f}, 95 % CI [{d.mean() - half:+.1f}, {d.mean() + half:+.1f}]"


def table(per_seed: list[dict], seeds: tuple[int, ...]) -> str:
    reported = [c for c in CLASSES if all(r["valid_moderate"][c] >= MIN_VALID for r in per_seed)]
    lines = ["Valid moderate validation boxes per seed (evaluator filters) and the ceilings (R40 / R11, GT boxes in "
             "the point range):", ""]
    for s, r in zip(seeds, per_seed):
        parts = [f"{c} {r['valid_moderate'][c]} ({r['ceiling'][f'{c}/R40']:.1f} / {r['ceiling'][f'{c}/R11']:.1f})"
                 for c in CLASSES]
        pos = ", ".join(f"{k} {v:.1f}" for k, v in r["positive_anchors"].items())
        lines.append(f"- seed {s}: {'; '.join(parts)}; positive anchors per training box: {pos}")
    skipped = [c for c in CLASSES if c not in reported]
    shown = STUDENTS + [v for v in VARIANTS if any(v[0] in r["rows"] or v[0] in r["stage1"] for r in per_seed)]
    lines += ["", f"Reported classes: {', '.join(reported) or 'none'}"
              + (f" ({', '.join(skipped)}: fewer than {MIN_VALID} valid boxes in some seed)" if skipped else ""), ""]
    for cls in reported:
        keys = metric_keys(cls)
        ceil = " / ".join(f"{r['ceiling'][f'{cls}/R40']:.1f}" for r in per_seed)
        lines += [f"**{cls}**, AP_R40 moderate, mean ± std (ddof 0) over seeds {', '.join(map(str, seeds))} "
                  f"(ceiling per seed {ceil}):", "", "| row | " + " | ".join(t for t, _ in keys)
                  + " | per seed (3D loose) |",
                  "|---|" + "---|" * (len(keys) + 1)]
        for row in [TEACHER] + [st[0] for st in shown]:
            cells = []
            for _, k in keys:
                v = [v for v in (r["rows"].get(row, {}).get(k, float("nan")) for r in per_seed) if not np.isnan(v)]
                cells.append(f"{np.mean(v):.2f} ± {np.std(v):.2f}" + (f" ({len(v)} of {len(per_seed)} seeds)"
                                                                      if len(v) < len(per_seed) else "")
                             if v else "not measured")
            seeds_3d = " / ".join(f"{r['rows'].get(row, {}).get(keys[2][1], float('nan')):.1f}" for r in per_seed)
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {seeds_3d} |")
        lines.append("")
        for title, key in keys:
            h, c, g = ([r["rows"].get(row, {}).get(key, float("nan")) for r in per_seed]
                       for row in ("HSRDN", "CMKD", "student, GT only"))
            # the oracles (upper bounds of the lifting) and the optional rows, each against CMKD on its teacher
            more = "".join(f"; {v[0]} − CMKD "
                           f"{paired([r['rows'].get(v[0], {}).get(key, float('nan')) for r in per_seed], c)}"
                           for v in shown if v[1] not in ("mono_gt", "cmkd", "hsrdn"))
            if any(v[1] == "oracle" for v in shown):  # the question the histogram oracle exists for
                o, oh = ([r["rows"].get(SLUGS[slug][0], {}).get(key, float("nan")) for r in per_seed]
                         for slug in ("oracle", "oracle_hist"))
                more += f"; {SLUGS['oracle_hist'][0]} − {SLUGS['oracle'][0]} {paired(oh, o)}"
            lines.append(f"- {title}: HSRDN − CMKD {paired(h, c)}; CMKD − GT only {paired(c, g)}{more}")
        lines.append("")
    lines += ["After stage 1 (the teacher's frozen head on each student's BEV map), Car 3D / BEV loose, per seed:", ""]
    for name, *_ in shown:
        vals = " / ".join(f"{r['stage1'].get(name, {}).get('car_3d_r40_moderate_loose', float('nan')):.1f}, "
                          f"{r['stage1'].get(name, {}).get('car_bev_r40_moderate_loose', float('nan')):.1f}"
                          for r in per_seed)
        lines.append(f"- {name}: {vals}")
    lines += ["", "Detection stage, Car 3D loose at each validation (step: AP), per seed:", ""]
    for name, *_ in shown:
        vals = " / ".join(", ".join(f"{step}: {ap:.1f}" for step, ap in r.get("curves", {}).get(name, [])) or "n/a"
                          for r in per_seed)
        lines.append(f"- {name}: {vals}")
    return "\n".join(lines)


def main(seeds: tuple[int, ...] = (0, 1, 2), steps: tuple[int, int, int] = (TEACHER_STEPS, BEV_STEPS, DET_STEPS),
         frames: int = FRAMES, report: bool = False, rows: tuple[str, ...] = tuple(s[1] for s in STUDENTS)) -> None:
    try:
        check_rows(rows)
    except ValueError as err:
        raise SystemExit(f"--{err}") from None
    if report:  # the runs finished so far; a seed without its data part is left out
        found = {s: report_seed(s, steps) for s in seeds}
        seeds = tuple(s for s, r in found.items() if r is not None)
        if not seeds:
            raise SystemExit(f"{OUT}: no seed of {sorted(found)} has its data part yet (seed<S>/data.json)")
        per_seed = [found[s] for s in seeds]
        asked = [TEACHER] + [SLUGS[slug][0] for slug in rows]
        missing = sorted({f"seed {s}: {row}" for s in seeds for row in asked if row not in found[s]["rows"]})
        text = table(per_seed, seeds) + (f"\n\nNot finished: {'; '.join(missing)}" if missing else "")
        print(f"HSRDN synthetic benchmark, runs finished so far under {OUT} (nothing trained)")
        print(text)
        return
    per_seed = [run_seed(s, steps, frames, rows) for s in seeds]
    text = table(per_seed, seeds)
    atomic_write_text(OUT / "table.md", text + "\n")
    print(f"HSRDN synthetic benchmark ({len(seeds)} seeds; teacher {steps[0]}, students {steps[1]} + {steps[2]} "
          "iterations)")
    print(text)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, nargs=3, default=[TEACHER_STEPS, BEV_STEPS, DET_STEPS],
                        metavar=("TEACHER", "BEV", "DET"),
                        help="iterations (a run folder of another count is refused: give each count its own "
                             "XMKD_BENCH_OUT)")
    parser.add_argument("--frames", type=int, default=FRAMES,
                        help="synthetic frames per seed (fewer leave every class below 41 valid boxes: a smoke run)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: print the table of the runs that have finished (a default row still "
                             "training is marked 'not measured'; the rows asked for by --rows that have not finished "
                             "are listed)")
    parser.add_argument("--rows", nargs="+", default=[s[1] for s in STUDENTS], metavar="SLUG",
                        help=f"the students to train (the teacher always is): {', '.join(SLUGS)}; default the "
                             f"table's rows {', '.join(s[1] for s in STUDENTS)}. The table shows every row finished "
                             "in XMKD_BENCH_OUT; with --report, the rows whose missing runs are listed")
    args = parser.parse_args()
    main(tuple(args.seeds), tuple(args.steps), args.frames, args.report, tuple(args.rows))
