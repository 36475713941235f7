"""U2MKD on the synthetic world in two regimes, 5 seeds, with each seed's paired difference KD - no-KD.

    python -m benchmarks u2mkd                               # every seed, then the tables; resumable
    python -m benchmarks.bench_u2mkd --seeds 4 3 2 1 0       # another process: it skips the parts (seed and
                                                             # regime) a live process holds
    python -m benchmarks.bench_u2mkd --table                 # the tables from the seeds finished so far
    python -m benchmarks.bench_u2mkd --seeds 2 --jobs 2      # one seed's rows side by side (xmkd demo's
                                                             # scheduler: teacher first; same training per row)
    python -m benchmarks.bench_u2mkd --rows student_nokd student_kd   # only these rows (+ their teacher); the
                                                             # others can follow later
    XMKD_BENCH_OUT=outputs/bench_u2mkd_1600 python -m benchmarks.bench_u2mkd --student-steps 1600 \
        --rows student_nokd student_kd                       # the full-label students at another schedule (its
                                                             # own output folder: a folder keeps one budget)

Per seed S (outputs/bench_u2mkd/seed<S>/): its own 40-keyframe world (32 train / 8 validation frames, three
front cameras at 128x72), then the rows of `xmkd.demo.plan` at the `BENCH` budget:
- (a) label-scarce: 1/8 of the training frames keep their labels (4 of 32, chosen by `model.labelled.seed=S`),
  for the teacher as well as the students. `teacher_scarce` (LiDAR, cr 0.5, + 2 sweeps) trains on those frames
  alone; the LiDAR + camera student (cr 0.25) without KD (`student_nokd_scarce`: segmentation losses on the
  labelled frames, imputation on all) and with KD (`student_kd_scarce`: + KL and feature imitation on every
  frame), paired (same initialisation, data order, augmentation and labelled frames); and a stronger no-KD
  control, trained on the labelled frames alone (`student_nokd_scarce_labelled_only`: every step supervised).
- (b) full labels: teacher, LiDAR-only student, camera-only, LC student without / with KD, KL only, feature
  imitation only, with a student schedule long enough for the training loss to flatten (the loss table shows it).

Every row is scored the same way (not with each recipe's own validation): the last checkpoint predicts every
keyframe point of the 8 validation frames. `miou6`: mean IoU over `CLASSES`, the six classes with >= 1 % of the
training points of every seed's world and present in each validation split (terrain down to 0.35 %; the table
prints the smallest shares); truck, bus and trailer are left out, their validation share swinging between
0.03 % and 12 % from seed to seed. A point a model does not label (camera-only: outside the cameras) is a
miss. `accuracy`: correct / labelled points. `agree`: the share of keyframe points where the row predicts the
class its regime's teacher predicts. Differences are per seed, with the mean and a 95 % t-interval over the
seeds.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from xmkd.data.index import IndexedFrames, summarize
from xmkd.data.labels import get_label_space
from xmkd.demo import BUDGETS, labelled_frames, make_dataset, plan, train_rows
from xmkd.engine.logging import read_metrics
from xmkd.eval.segmentation import ConfusionMatrix
from xmkd.io import atomic_write_text
from xmkd.runs.predict import load_trained, predict_frame

OUT = Path(os.environ.get("XMKD_BENCH_OUT", "outputs/bench_u2mkd"))
SEEDS = (0, 1, 2, 3, 4)
BENCH = BUDGETS["bench"]
CLASSES = ("car", "driveable_surface", "manmade", "sidewalk", "terrain", "vegetation")
METRICS = ("miou6", "accuracy", "agree")
SCARCE = {"teacher": "teacher_scarce", "rows": ["teacher_scarce", "student_nokd_scarce", "student_kd_scarce",
                                                "student_nokd_scarce_labelled_only"],
          "pairs": [("student_kd_scarce", "student_nokd_scarce"),
                    ("student_kd_scarce", "student_nokd_scarce_labelled_only")]}
FULL = {"teacher": "teacher", "rows": ["teacher", "student_lidar_only", "camera_only", "student_nokd", "student_kd",
                                       "student_kd_kl_only", "student_kd_feat_only"],
        "pairs": [("student_kd", "student_nokd"), ("student_kd_kl_only", "student_nokd"),
                  ("student_kd_feat_only", "student_nokd")]}
REGIMES = {"full": FULL, "scarce": SCARCE}
# 97.5 % quantile of Student's t with k degrees of freedom (two-sided 95 % interval of a mean of k + 1 values)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def evaluate(runs: Path, names: list[str], teacher: str) -> dict[str, dict[str, float]]:
    """`METRICS` (in %) of every named run, from its last checkpoint's predictions on every validation keyframe
    point, plus the validation points per class of `CLASSES` (`gt_<class>`). Raises SystemExit when a class of
    `CLASSES` has no validation point (the fixed list would then not be fixed)."""
    space = get_label_space("nuscenes16")
    recipes = {n: load_trained(runs / n, ckpt=runs / n / "checkpoints" / "last.pt") for n in [teacher, *names]}
    cms = {n: ConfusionMatrix(space.num_classes, space.ignore_index, space.class_names) for n in names}
    agree = dict.fromkeys(names, 0)
    total = 0
    frames = {n: r.frames(r.cfg.data.val_split) for n, r in recipes.items()}
    for i in range(len(frames[teacher])):
        preds = {n: predict_frame(r, frames[n][i]) for n, r in recipes.items()}
        labels = frames[teacher][i].labels[: len(preds[teacher])]
        total += len(labels)
        for n in names:
            cms[n].update(preds[n], labels)
            agree[n] += int((preds[n] == preds[teacher]).sum())
    ids = [space.class_names.index(c) for c in CLASSES]
    out = {}
    for n in names:
        cm = cms[n]
        counts = cm.class_counts()
        if (counts[ids] == 0).any():
            missing = [c for c, k in zip(CLASSES, counts[ids]) if k == 0]
            raise SystemExit(f"{runs}: no validation point of {missing}; the fixed class list does not hold here")
        iou = cm.iou("semantickitti")  # a point without a prediction is a miss
        out[n] = {"miou6": 100 * float(iou[ids].mean()), "accuracy": 100 * float(np.diag(cm.matrix)[:-1].sum()
                                                                                   / counts.sum()),
                  "agree": 100 * agree[n] / total, **{f"gt_{c}": int(counts[i]) for c, i in zip(CLASSES, ids)}}
    return out


def class_shares(data: Path) -> dict[str, dict[str, float]]:
    """Share (%) of the labelled keyframe points of each class of `CLASSES`, per split of a synthetic world (from
    the label counts its index keeps per frame)."""
    out = {}
    for split in ("synthetic_train", "synthetic_val"):
        frames = IndexedFrames(data / "xmkd_index", split, "nuscenes16", cameras=[])
        hist = summarize(frames.records, frames.reader)["label_histogram"]
        total = sum(v for k, v in hist.items() if k != "ignore")
        out[split] = {c: round(100 * hist.get(c, 0) / total, 2) for c in CLASSES}
    return out


def loss_windows(run: Path, steps: int, windows: int = 10) -> list[float]:
    """Mean training loss (the segmentation terms: ce, lovasz, pixel_ce, pixel_lovasz) in each tenth of the run."""
    rows = [r for r in read_metrics(run) if r.get("kind") == "train"]
    seg = [(r["step"], sum(r.get(k, 0.0) for k in ("ce", "lovasz", "pixel_ce", "pixel_lovasz"))) for r in rows]
    edges = np.linspace(0, steps, windows + 1)
    return [float(np.mean([v for s, v in seg if lo < s <= hi] or [np.nan])) for lo, hi in zip(edges[:-1], edges[1:])]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def claim(folder: Path, name: str) -> bool:
    """Take `folder/.lock_<name>` for this process; False when another live process holds it (a dead one's lock is
    taken over), so several processes can share the work of one benchmark."""
    lock = folder / f".lock_{name}"
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid == os.getpid():
                return True
            if pid and _alive(pid):
                return False
            lock.unlink(missing_ok=True)  # its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True


def regime_budget(budget: dict | None, regime: str) -> dict:
    """The fields of a saved `asdict(DemoBudget)` (None: the current `BENCH`) that change the rows of `regime`, as
    JSON values; the scarce rows ignore the full-label schedule and the full rows the scarce one, and neither the
    ablation switches (they add rows, `--rows` adds them later, and change none that exists)."""
    ignored = ("ablations", "scarce_ablations") + (("teacher_steps", "student_steps") if regime == "scarce" else (
        "scarce_fraction", "scarce_teacher_steps", "scarce_student_steps"))
    saved = json.loads(json.dumps(asdict(BENCH) if budget is None else budget))  # tuples as the saved lists
    return {k: v for k, v in saved.items() if k not in ignored}


def budget_changes(budget: dict | None, regime: str) -> dict[str, tuple]:
    """The fields of `budget` that differ from `BENCH` and change the rows of `regime`: field -> (saved, now)."""
    saved, now = regime_budget(budget, regime), regime_budget(None, regime)
    return {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}


def common_budget(per_seed: list[dict], regime: str) -> dict:
    """The budget every seed of `per_seed` trained `regime` at (a file without one: `BENCH`). Raises SystemExit
    when two seeds differ: their numbers cannot share a table."""
    first = regime_budget(per_seed[0].get("budget"), regime)
    for r in per_seed[1:]:
        if diff := sorted(k for k, v in regime_budget(r.get("budget"), regime).items() if first.get(k) != v):
            raise SystemExit(f"{OUT}: seeds {per_seed[0]['seed']} and {r['seed']} of the {regime} regime were trained "
                             f"at different budgets ({', '.join(diff)}); tabulate them from separate XMKD_BENCH_OUT")
    return first


def run_regime(seed: int, regime: str, jobs: int = 1, only: list[str] | None = None) -> dict | None:
    """Train (or reuse) the rows of one regime ("full" or "scarce") of one seed and score them into
    seed<S>/<regime>.json. `only`: just these rows of the regime (and its teacher), added to what that file already
    holds (the other rows can follow later; `regime_table` shows the rows every seed has). None when another
    process is running this part. `jobs`: rows trained side by side (`xmkd.demo.train_rows`; each row trains as it
    would alone). Raises SystemExit when the file holds rows trained at another budget."""
    folder = OUT / f"seed{seed}"
    done = folder / f"{regime}.json"
    spec = REGIMES[regime]
    wanted = [n for n in spec["rows"] if only is None or n in only or n == spec["teacher"]]

    def earlier() -> dict:
        part = json.loads(done.read_text()) if done.exists() else {"rows": {}}
        if changed := budget_changes(part.get("budget", asdict(BENCH)), regime):
            raise SystemExit(f"{done}: its rows were trained at another budget ({changed}); score this budget "
                             "under another XMKD_BENCH_OUT")
        return part

    part = earlier()
    if all(n in part["rows"] for n in wanted):
        return part
    if not claim(folder, regime):
        print(f"seed {seed} {regime}: another process holds it; skipped")
        return None
    try:  # the lock goes with this process, whether the rows train or fail (a killed one's is taken over)
        before = earlier()  # read again under the lock: another process may have added rows meanwhile
        data = make_dataset(folder / "data", seed, BENCH)
        runs = folder / "runs"
        new = [n for n in wanted if n not in before["rows"]]
        rows = {n: r for n, r in plan(BENCH, data, runs, seed).items() if n in wanted}
        timing = folder / f"seconds_{regime}.json"  # wall seconds of each run when it was trained, and the load then
        measured = json.loads(timing.read_text()) if timing.exists() else {}

        def record(name: str, seconds: float) -> None:
            if name not in measured:
                measured[name] = {"seconds": seconds, "loadavg": [round(x, 2) for x in os.getloadavg()]}
                atomic_write_text(timing, json.dumps(measured, indent=1))

        train_rows(rows, runs, record, jobs=jobs)
        with torch.no_grad():
            scored = {**before["rows"], **evaluate(runs, new, spec["teacher"])}
        result = {"seed": seed, "budget": asdict(BENCH), "seconds": measured,
                  "rows": {n: scored[n] for n in spec["rows"] if n in scored}, "class_share": class_shares(data)}
        # what the file held for its earlier rows is kept; only the new rows are read from their run folders
        if regime == "full":
            result["loss"] = {**before.get("loss", {}), **{n: loss_windows(runs / n, BENCH.student_steps) for n in new
                                                           if n != "teacher"}}
        elif "labelled" in before:
            result["labelled"] = before["labelled"]
        elif students := [n for n in new if n != spec["teacher"]]:  # the same frames in every u2mkd row
            result["labelled"] = labelled_frames(runs / students[0])
        atomic_write_text(done, json.dumps(result, indent=1))
        return result
    finally:
        (folder / f".lock_{regime}").unlink(missing_ok=True)


def regime_results(seeds: tuple[int, ...], regime: str) -> list[dict]:
    """The finished seeds of one regime, in `seeds` order: {"seed", <regime>: rows, and what the regime's json
    holds besides (class shares, seconds; the full regime's loss windows, the scarce regime's labelled frames)}."""
    out = []
    for seed in seeds:
        path = OUT / f"seed{seed}" / f"{regime}.json"
        if path.exists():
            part = json.loads(path.read_text())
            out.append({**{k: v for k, v in part.items() if k != "rows"}, "seed": seed, regime: part["rows"]})
    return out


def interval(values: list[float]) -> str:
    """mean [low, high] of the 95 % t-interval (the mean alone for one value)."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return f"{v.mean():+.2f}"
    half = T975[len(v) - 1] * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():+.2f} [{v.mean() - half:+.2f}, {v.mean() + half:+.2f}]"


def measured_rows(per_seed: list[dict], regime: str, names: list[str]) -> list[str]:
    """The rows of `names` that every seed of `per_seed` has scored (`run_regime(only=...)` can leave gaps)."""
    return [n for n in names if all(n in r[regime] for r in per_seed)]


def regime_table(per_seed: list[dict], regime: str, spec: dict) -> str:
    seeds = [r["seed"] for r in per_seed]
    rows = measured_rows(per_seed, regime, spec["rows"])
    lines = [f"| row | {' | '.join(METRICS)} |", "|---|" + "---|" * len(METRICS)]
    for row in rows:
        cells = [f"{np.mean([r[regime][row][m] for r in per_seed]):.2f} ± "
                 f"{np.std([r[regime][row][m] for r in per_seed], ddof=1) if len(per_seed) > 1 else 0:.2f}"
                 for m in METRICS]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if missing := [n for n in spec["rows"] if n not in rows]:
        lacking = [f"{n} (no score on seeds {', '.join(str(r['seed']) for r in per_seed if n not in r[regime])})"
                   for n in missing]
        lines.append(f"| left out, not scored on every seed: {'; '.join(lacking)} | | | |")
    pairs = [(a, b) for a, b in spec["pairs"] if a in rows and b in rows]
    if pairs:
        lines += ["", f"| paired difference (seeds {', '.join(map(str, seeds))}) | metric | per seed | "
                      "mean [95 % interval] |", "|---|---|---|---|"]
    for a, b in pairs:
        for m in METRICS:
            d = [r[regime][a][m] - r[regime][b][m] for r in per_seed]
            lines.append(f"| {a} − {b} | {m} | {', '.join(f'{x:+.2f}' for x in d)} | {interval(d)} |")
    return "\n".join(lines)


def loss_table(per_seed: list[dict]) -> str:
    """Mean over seeds of the segmentation loss per tenth of the full-label student schedule (the rows every seed
    has)."""
    names = [n for n in per_seed[0]["loss"] if all(n in r["loss"] for r in per_seed)]
    lines = ["| row | " + " | ".join(f"{10 * i}-{10 * i + 10} %" for i in range(10)) + " |", "|---|" + "---|" * 10]
    for n in names:
        w = np.nanmean([r["loss"][n] for r in per_seed], axis=0)
        lines.append(f"| {n} | " + " | ".join(f"{x:.3f}" for x in w) + " |")
    return "\n".join(lines)


def tables(full: list[dict], scarce: list[dict]) -> str:
    """The tables of each regime over the seeds that finished it (`regime_results`)."""
    both = [*full, *scarce]
    parts = []
    if scarce:
        common_budget(scarce, "scarce")
        labelled = [f"seed {r['seed']}: {len(r['labelled']['labelled_frames'])} of {r['labelled']['training_frames']}"
                    for r in scarce if "labelled" in r]
        parts += [f"(a) label-scarce: 1/8 of the training frames labelled ({'; '.join(labelled)}), mean ± std over "
                  f"{len(scarce)} seeds, %", regime_table(scarce, "scarce", SCARCE), ""]
    if full:
        steps = common_budget(full, "full")["student_steps"]
        parts += [f"(b) full labels, students {steps} iterations, mean ± std over {len(full)} seeds, %",
                  regime_table(full, "full", FULL), "",
                  "segmentation loss of the full-label students per tenth of the schedule (mean over seeds)",
                  loss_table(full), ""]
    runs = sorted({n for r in both for n in r["seconds"]})  # sorted: the same line on every run
    seconds = {n: round(float(np.mean([r["seconds"][n]["seconds"] for r in both if n in r["seconds"]]))) for n in runs}
    parts += ["smallest share (%) of each class of the mIoU over the seeds' train / validation splits: " + ", ".join(
        f"{c} {min(r['class_share']['synthetic_train'][c] for r in both):.2f} / "
        f"{min(r['class_share']['synthetic_val'][c] for r in both):.2f}" for c in CLASSES), "",
        f"training seconds per run (mean over the seeds that ran it, as measured): {seconds}"]
    return "\n".join(parts)


def use_student_steps(steps: int | None) -> None:
    """Train the full-label students for `steps` iterations instead of `BUDGETS["bench"].student_steps` (None: that
    default): the module's `BENCH` budget for this process. The budget is saved with each regime's file, so a folder
    of another schedule is refused (`run_regime`) and seeds of two schedules share no table (`common_budget`).
    Raises ValueError for fewer than 10 steps (the loss table needs a step in each tenth)."""
    global BENCH
    if steps is not None and steps < 10:
        raise ValueError(f"student steps: at least 10 (the loss table averages each tenth of the run), not {steps}")
    BENCH = BUDGETS["bench"] if steps is None else replace(BUDGETS["bench"], student_steps=steps)


def main(seeds: tuple[int, ...] = SEEDS, table_only: bool = False, jobs: int = 1,
         only: list[str] | None = None, student_steps: int | None = None) -> None:
    """Train and score every seed's regimes (`only`: just these rows, with their regime's teacher; `student_steps`:
    the full-label students' schedule, `use_student_steps`), then print and write the tables."""
    use_student_steps(student_steps)
    if not table_only:  # the bigger parts first, so that several processes finish close together
        for regime, seed in [(r, s) for r in ("full", "scarce") for s in seeds]:
            if only is None or set(only) & set(REGIMES[regime]["rows"]):
                run_regime(seed, regime, jobs, only)
    full, scarce = regime_results(seeds, "full"), regime_results(seeds, "scarce")
    if not full and not scarce:
        raise SystemExit(f"no seed of either regime finished under {OUT}")
    text = tables(full, scarce)
    atomic_write_text(OUT / "table.md", text + "\n")
    print(f"U2MKD synthetic benchmark, two regimes (seeds finished: label-scarce {[r['seed'] for r in scarce]}, "
          f"full labels {[r['seed'] for r in full]}; mIoU over {', '.join(CLASSES)})")
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="each seed once (repeats dropped)")
    parser.add_argument("--table", action="store_true", help="only tabulate the seeds already finished")
    parser.add_argument("--jobs", type=int, default=1, help="rows of one seed trained side by side (default 1)")
    parser.add_argument("--rows", nargs="+", metavar="ROW", help="train and score only these rows (and their "
                        "regime's teacher); the tables show the rows every seed has")
    parser.add_argument("--student-steps", type=int, metavar="N", help="iterations of the full-label students "
                        f"(default {BENCH.student_steps}; use an output folder of its own: a folder keeps one budget)")
    args = parser.parse_args()
    if args.student_steps is not None and args.student_steps < 10:
        parser.error(f"--student-steps must be at least 10, not {args.student_steps}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    if args.table and args.student_steps is not None:
        parser.error("--student-steps chooses a schedule to train; --table trains nothing (it shows the schedule the "
                     "folder's seeds were trained at)")
    if args.table and args.rows:
        parser.error("--rows chooses rows to train; --table trains nothing (it shows the rows every seed has)")
    known = [*FULL["rows"], *SCARCE["rows"]]
    if unknown := [n for n in args.rows or [] if n not in known]:
        parser.error(f"--rows: unknown {unknown}; the rows are {known}")
    main(tuple(dict.fromkeys(args.seeds)), args.table, args.jobs, args.rows, args.student_steps)
