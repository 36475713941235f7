"""`xmkd demo`: U2MKD end to end on the synthetic world, small enough for a 2-core CPU.

1. render a small synthetic nuScenes-format dataset (LiDAR with sweeps, three front cameras) and index it;
2. train the LiDAR teacher (`lidar_seg`, keyframe + 2 sweeps);
3. train, from the same seed and for the same number of steps, the LiDAR-only student (`lidar_seg`, single
   sweep), the camera-only SwiftNet (`camera_seg`), the LiDAR + camera student without distillation
   (`u2mkd`, kd=false) and with distillation from the teacher (`u2mkd`);
4. the label-scarce regime (`model.labelled`): 1/8 of the training frames keep their labels; a teacher trained
   on those frames alone (`teacher_scarce`), and the LiDAR + camera student on the same labels without KD
   (`student_nokd_scarce`) and with KD on every frame (`student_kd_scarce`);
5. print one table (point mIoU, pixel mIoU, mIoU with cameras dropped), a verdict per regime, write
   `results.json` and a report folder (training curves, per-class IoU bars, prediction overlays on validation
   frames).
Everything lands under `--out` (default outputs/demo). Re-running reuses the dataset and finished runs;
results.json then lists them in `reused_rows` and keeps the seconds they took to train in `run_seconds`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmkd.config import CONFIG_DIR
from xmkd.data.readers.nuscenes import require_devkit
from xmkd.data.synthetic.synth import SynthOptions, synthesize_indexed
from xmkd.engine.logging import read_metrics
from xmkd.errors import XmkdError
from xmkd.io import atomic_write_text
from xmkd.runs.run_dir import run_config
from xmkd.runs.train import train_or_reuse


@dataclass(frozen=True)
class DemoBudget:
    frames: int = 32
    frames_per_scene: int = 4
    image_size: tuple[int, int] = (128, 72)
    cameras: tuple[str, ...] = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT")
    teacher_steps: int = 120
    student_steps: int = 70
    max_points: int = 6000
    teacher_cr: float = 0.5  # twice the students' width (cr 0.25), as in the paper (2 vs 1)
    ablations: bool = False  # also KD with only the KL term and with only the feature term
    scarce_fraction: float = 0.125  # label-scarce rows: the share of training frames that keep their labels
    scarce_teacher_steps: int = 120
    scarce_student_steps: int = 70
    scarce_ablations: bool = False  # also no-KD trained on the labelled frames alone (every step supervised)


BUDGETS = {"demo": DemoBudget(),
           "tiny": DemoBudget(frames=6, frames_per_scene=3, teacher_steps=4, student_steps=3, max_points=2000,
                              scarce_fraction=0.6, scarce_teacher_steps=4, scarce_student_steps=3),  # 2 of 3
           # benchmarks/bench_u2mkd.py: more data, the KD ablations, and a full-label student schedule long enough
           # for the training loss to flatten (800: doubling 400 lowered the final loss by about 30 %;
           # docs/benchmarks.md)
           "bench": DemoBudget(frames=40, teacher_steps=800, student_steps=800, ablations=True,
                               scarce_teacher_steps=200, scarce_student_steps=200, scarce_ablations=True)}

# checkpoints every 40 iterations (a resume point, without writing the 250 MB student state at every step)
COMMON = ["data.num_workers=1", "train.log_every=10", "train.ckpt_every=40", "data.voxel_size=0.4",
          "data.point_range=[-38.4,-38.4,-4.8,38.4,38.4,4.8]", "model.backbone.cr=0.25", "model.backbone.blocks=1",
          "model.backbone.window=2.4"]  # the release's 6 voxels


def _train(config: str, overrides: list[str], run_dir: Path) -> dict[str, float]:
    return train_or_reuse(CONFIG_DIR / config, overrides, run_dir)


def make_dataset(out: Path, seed: int, b: DemoBudget) -> Path:
    """The budget's synthetic nuScenes-format world under `out` (reused when it exists)."""
    synthesize_indexed(SynthOptions(out=str(out), preset="day", format="nuscenes", frames=b.frames,
                                    frames_per_scene=b.frames_per_scene, seed=seed, image_size=b.image_size,
                                    cameras=b.cameras, val_fraction=0.25, workers=2), "nuscenes")
    return out


def plan(b: DemoBudget, data: Path, runs: Path, seed: int) -> dict[str, tuple[str, list[str]]]:
    """Every row of the demo: name -> (config under configs/, overrides), in training order (a teacher before
    the students that distil from it). The full-label rows first, then the label-scarce ones."""
    base = [f"data.root={data}", f"output_dir={runs}", f"seed={seed}", *COMMON]
    teacher = [*base, "data.sweeps=2", f"model.max_points={b.max_points * 2}", f"model.backbone.cr={b.teacher_cr}"]
    u2 = [f"data.image_size=[{b.image_size[0]},{b.image_size[1]}]", "model.camera_drop=1", "model.eval_camera_drop=2",
          "model.decoder_width=64", f"model.teacher.backbone.cr={b.teacher_cr}", "model.teacher.backbone.blocks=1",
          "model.teacher.backbone.window=2.4", f"model.max_points={b.max_points}"]

    def steps(n: int) -> list[str]:
        return [f"train.max_iters={n}", f"train.val_every={n}"]

    def kd(teacher_run: str) -> list[str]:
        return ["model.kd=true", f"model.teacher.checkpoint={runs / teacher_run / 'checkpoints' / 'last.pt'}",
                "data.sweeps=2"]

    student = [*base, *steps(b.student_steps)]
    rows = {"teacher": ("lidar_seg/synthetic.yaml", [*teacher, "name=teacher", *steps(b.teacher_steps)]),
            "student_lidar_only": ("lidar_seg/synthetic.yaml", [*student, "name=student_lidar_only",
                                                                f"model.max_points={b.max_points}"]),
            "camera_only": ("camera_seg/synthetic.yaml", [*student, "name=camera_only", *u2]),
            "student_nokd": ("u2mkd/synthetic.yaml", [*student, "name=student_nokd", "model.kd=false", *u2]),
            "student_kd": ("u2mkd/synthetic.yaml", [*student, "name=student_kd", *kd("teacher"), *u2])}
    if b.ablations:  # which distillation term helps or hurts: KL alone, feature imitation alone
        for name, weights in (("student_kd_kl_only", "model.w_feat=0"), ("student_kd_feat_only", "model.w_kl=0")):
            rows[name] = ("u2mkd/synthetic.yaml", [*student, f"name={name}", *kd("teacher"), weights, *u2])
    if b.scarce_fraction < 1:  # the same frames keep their labels for the teacher and the students
        labelled = [f"model.labelled.fraction={b.scarce_fraction}", f"model.labelled.seed={seed}"]
        scarce = [*base, *steps(b.scarce_student_steps), *labelled, *u2]
        rows["teacher_scarce"] = ("lidar_seg/synthetic.yaml", [*teacher, "name=teacher_scarce", *labelled,
                                                               *steps(b.scarce_teacher_steps)])
        rows["student_nokd_scarce"] = ("u2mkd/synthetic.yaml", [*scarce, "name=student_nokd_scarce", "model.kd=false"])
        rows["student_kd_scarce"] = ("u2mkd/synthetic.yaml", [*scarce, "name=student_kd_scarce",
                                                              *kd("teacher_scarce")])
        if b.scarce_ablations:
            rows["student_nokd_scarce_labelled_only"] = ("u2mkd/synthetic.yaml", [
                *scarce, "name=student_nokd_scarce_labelled_only", "model.kd=false", "model.unlabelled=drop"])
    return rows


def available_cores() -> int:
    """The cores this process may run on (the CPU affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def training_threads(jobs: int = 1) -> int:
    """Torch threads of each of `jobs` rows that train side by side: OMP_NUM_THREADS when it is set, else
    `available_cores() // jobs`, less one for one job (its data worker, `data.num_workers=1`, takes it). On 2
    cores a second torch thread only contends with the worker, and on a busy machine OpenMP threads that wait for
    each other made a teacher step ~13x dearer in CPU time (docs/benchmarks.md, U2MKD demo). Side by side, each
    data worker costs ~6 % of a core (measured), too little to reserve a core for."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = available_cores()
    return max(1, cores - 1) if jobs <= 1 else max(1, cores // jobs)


def row_dependencies(rows: dict[str, tuple[str, list[str]]], runs: Path) -> dict[str, set[str]]:
    """Row -> the rows it needs finished first: those whose run directory its overrides name (a distilling
    student names its teacher's checkpoint)."""
    return {name: {other for other in rows if other != name
                   and any(f"{runs / other}{os.sep}" in o for o in overrides)}
            for name, (_, overrides) in rows.items()}


def schedule(rows: dict[str, tuple[str, list[str]]], runs: Path) -> list[str]:
    """The order in which rows start when several train side by side: rows that others need first (the
    teachers), then the rows that need them (the distilling students, the longest), then the rest, each group in
    plan order. On 2 cores the demo's two teachers then train together, then the two KD students."""
    deps = row_dependencies(rows, runs)
    needed = set().union(*deps.values())
    names = list(rows)
    return sorted(names, key=lambda n: (0 if n in needed else 1 if deps[n] else 2, names.index(n)))


def _train_row(config: str, overrides: list[str], run_dir: Path, threads: int, position: int | None
               ) -> dict[str, float]:
    # this process was spawned, and spawn became its default: its data workers would re-import torch and xmkd at
    # every loader (seconds of CPU each); fork them as a row trained in the main process does
    if "fork" in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("fork", force=True)
    torch.set_num_threads(threads)
    return train_or_reuse(CONFIG_DIR / config, overrides, run_dir, bar_position=position)


def train_rows(rows: dict[str, tuple[str, list[str]]], runs: Path,
               on_done: Callable[[str, float], None] | None = None,
               jobs: int = 1) -> tuple[dict[str, dict], dict[str, float]]:
    """Train (or reuse) every planned row: (final validation metrics, wall seconds) per row; `on_done(name,
    seconds)` is called after each row (a reused row takes about a second).

    jobs = 1: in plan order, in this process, on `training_threads()` torch threads. jobs > 1: that many rows at a
    time, each in its own (spawned) process on `training_threads(jobs)` threads, in `schedule` order, a row starting
    once the rows it needs have finished. Each row's training is the same either way (same seed, data order and
    single-threaded arithmetic on 2 cores; tests/test_demo.py checks it); only the wall time differs. A row that
    fails stops the others from starting; the rows already training finish (they resume anyway) and the first
    error is raised.

    Raises:
        whatever the failing row's training raised (XmkdError subclasses for bad configs or data).
    """
    jobs = min(jobs, len(rows))  # more processes than rows would only wait
    if jobs <= 1:
        return _train_in_order(rows, runs, on_done)
    metrics, seconds = {}, {}
    deps = row_dependencies(rows, runs)
    pending = schedule(rows, runs)
    threads = training_threads(jobs)
    free = list(range(jobs))  # progress-bar lines
    running: dict = {}
    error: BaseException | None = None
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while running or (pending and error is None):
            ready = [n for n in pending if deps[n] <= set(metrics)] if error is None else []
            for name in ready[:len(free)]:
                pending.remove(name)
                slot = free.pop(0)
                config, overrides = rows[name]
                print(f"-- {name}", flush=True)
                # one progress-bar line per slot on a terminal; in a log, tqdm's cursor moves would only garble it
                future = pool.submit(_train_row, config, overrides, runs / name, threads,
                                     slot if sys.stderr.isatty() else None)
                running[future] = (name, slot, time.perf_counter())
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name, slot, t0 = running.pop(future)
                free.append(slot)
                free.sort()
                try:
                    metrics[name] = future.result()
                except BaseException as exc:  # noqa: BLE001 - re-raised below, after the running rows stop
                    if error is None:
                        error = exc
                        if running:
                            print(f"-- {name} failed; waiting for {', '.join(r[0] for r in running.values())} "
                                  "to finish (nothing else starts)", flush=True)
                    continue
                seconds[name] = round(time.perf_counter() - t0, 1)
                if on_done is not None:
                    on_done(name, seconds[name])
    if error is not None:
        raise error
    return {n: metrics[n] for n in rows}, {n: seconds[n] for n in rows}


def _train_in_order(rows: dict[str, tuple[str, list[str]]], runs: Path,
                    on_done: Callable[[str, float], None] | None) -> tuple[dict[str, dict], dict[str, float]]:
    metrics, seconds = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(training_threads())
    try:
        for name, (config, overrides) in rows.items():
            t0 = time.perf_counter()
            print(f"-- {name}")
            metrics[name] = _train(config, overrides, runs / name)
            seconds[name] = round(time.perf_counter() - t0, 1)
            if on_done is not None:
                on_done(name, seconds[name])
    finally:
        torch.set_num_threads(threads)
    return metrics, seconds


def _gap(rows: dict[str, dict[str, float]], kd: str, nokd: str) -> str:
    a, b = rows[kd]["point_miou"], rows[nokd]["point_miou"]
    return (f"KD is ahead of no-KD by {a - b:.2f} point mIoU ({a:.2f} vs {b:.2f})" if a > b else
            f"KD is NOT ahead of no-KD ({a:.2f} vs {b:.2f} point mIoU)")


def verdict(rows: dict[str, dict[str, float]], labelled: int, frames: int) -> str:
    """One line per regime: what the KD - no-KD comparison of this seed shows."""
    lines = [f"full labels: {_gap(rows, 'student_kd', 'student_nokd')}; here the teacher's soft labels fall on "
             "points whose labels the student already has"]
    if "student_kd_scarce" in rows:
        lines.append(f"label-scarce ({labelled} of {frames} training frames labelled, for the teacher too; KD on "
                     f"every frame): {_gap(rows, 'student_kd_scarce', 'student_nokd_scarce')}; here the teacher's "
                     f"soft labels are the only supervision on the other {frames - labelled} frames")
    lines.append("(one seed: differences of a few points are within the seed spread; `python -m benchmarks u2mkd` "
                 "gives each regime's paired differences over 5 seeds)")
    if "camera_only" in rows:
        lines.append("(camera_only: point mIoU over every point, those outside the cameras counted as misses; "
                     "coverage = % of labelled points inside a camera)")
    return "\n".join(lines)


def labelled_frames(run_dir: Path) -> dict[str, Any]:
    """A label-scarce `u2mkd` run's labelled training frames (ids) and the size of its training split."""
    recipe_cls, cfg = run_config(run_dir)
    if not hasattr(recipe_cls, "labelled_training_ids"):
        raise XmkdError(f"{run_dir}: recipe {recipe_cls.name!r} has no label-scarce option (model.labelled)")
    recipe = recipe_cls(cfg, torch.device("cpu"))
    ids = recipe.labelled_training_ids()
    total = len(recipe.frames(recipe.cfg.data.train_split))
    return {"labelled_frames": sorted(ids) if ids is not None else [], "training_frames": total}


def run_demo(out: str | Path = "outputs/demo", seed: int = 0, budget: str = "demo", jobs: int | None = None
             ) -> dict[str, Any]:
    """Run the demo into `out` (see the module docstring); `jobs`: rows that train side by side (default: one per
    core, at most one per row; `train_rows`). Returns what results.json holds."""
    require_devkit("xmkd demo renders its synthetic world in nuScenes format and reads it back as nuScenes; that")
    b = BUDGETS[budget]
    out = Path(out)
    start = time.perf_counter()
    data = out / "data"
    print(f"[1/4] synthetic dataset -> {data}")
    make_dataset(data, seed, b)
    runs = out / "runs"
    rows = plan(b, data, runs, seed)
    print(f"[2/4] teacher (LiDAR, keyframe + 2 sweeps) and students: LiDAR only, camera only, LiDAR + camera without "
          f"and with KD; then the label-scarce teacher and students ({b.scarce_fraction:g} of the frames labelled)")
    jobs = available_cores() if jobs is None else jobs
    began = time.time()
    metrics, seconds = train_rows(rows, runs, jobs=jobs)
    reused = [n for n in rows if (runs / n / "checkpoints" / "last.pt").stat().st_mtime < began]
    earlier = _earlier_run_seconds(out / "results.json")
    print("[3/4] results")
    results = {"rows": {k: _percent(v) for k, v in metrics.items()}, "budget": budget, "seed": seed,
               "seconds": None, "reused_rows": reused,
               "run_seconds": {n: earlier.get(n) if n in reused else s for n, s in seconds.items()},
               "per_class": {k: {m: x for m, x in v.items() if m.startswith("iou_")} for k, v in metrics.items()}}
    if "student_kd_scarce" in rows:
        results["scarce"] = labelled_frames(runs / "student_kd_scarce")
    table = format_rows(results["rows"])
    results["verdict"] = verdict(results["rows"], len(results.get("scarce", {}).get("labelled_frames", [])),
                                 results.get("scarce", {}).get("training_frames", 0))
    print("[4/4] report")
    report = out / "report"
    write_report(report, runs, results)
    overlays = write_overlays(report, runs, list(rows))
    results["seconds"] = round(time.perf_counter() - start, 1)  # everything: dataset, rows, report
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    print(table)
    print(results["verdict"])
    print(f"results: {out / 'results.json'}; report: {report}/ ({len(overlays)} prediction overlays); runs: {runs}/ "
          f"({results['seconds']:.0f} s)")
    return results


def _earlier_run_seconds(path: Path) -> dict[str, float | None]:
    """The training seconds an earlier demo run recorded per row (a reused row keeps them: its seconds now would be
    the reuse's); {} when there is no readable earlier results.json."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    seconds = earlier.get("run_seconds") if isinstance(earlier, dict) else None
    if not isinstance(seconds, dict):
        return {}
    return {name: s for name, s in seconds.items() if isinstance(s, (int, float)) and not isinstance(s, bool)}


def write_overlays(folder: Path, runs: Path, names: list[str], frames: int = 2) -> list[Path]:
    """Ground truth and every row's predictions on the first validation frames (camera + bird's-eye view)."""
    from xmkd.runs.predict import load_trained, predict_frame
    from xmkd.viz.predictions import prediction_figure

    recipes = {name: load_trained(runs / name) for name in names}
    shown = recipes["student_nokd"]
    val = shown.frames(shown.cfg.data.val_split)
    paths = []
    for i in range(min(frames, len(val))):
        frame = val[i]
        preds = {}
        for name, recipe in recipes.items():  # each recipe loads the frame as it needs it (sweeps, cameras)
            own = frame if recipe is shown else recipe.frames(recipe.cfg.data.val_split)[i]
            preds[name] = predict_frame(recipe, own)
        camera = "CAM_FRONT" if "CAM_FRONT" in frame.cameras else sorted(frame.cameras)[0]
        paths.append(prediction_figure(frame, shown.space, preds, camera, folder / f"predictions_{i}.png"))
    return paths


def _percent(metrics: dict[str, float]) -> dict[str, float]:
    out = {"point_miou": 100 * metrics.get("miou", float("nan"))}
    if "accuracy" in metrics:
        out["point_accuracy"] = 100 * metrics["accuracy"]
    for key in ("pixel_miou", "coverage"):
        if key in metrics:
            out[key] = 100 * metrics[key]
    for k, v in metrics.items():
        if k.startswith("miou_drop"):
            out[f"point_{k}"] = 100 * v
    return out


def format_rows(rows: dict[str, dict[str, float]]) -> str:
    cols = ["point_miou", "pixel_miou", "point_miou_drop2", "point_accuracy", "coverage"]
    width = max(20, *(len(n) + 2 for n in rows))
    lines = [f"{'':<{width}}" + "".join(f"{c:>18}" for c in cols)]
    for name, r in rows.items():
        lines.append(f"{name:<{width}}" + "".join(f"{r[c]:>18.2f}" if c in r else f"{'-':>18}" for c in cols))
    return "\n".join(lines)


def write_report(folder: Path, runs: Path, results: dict[str, Any]) -> None:
    """Training curves and a bar chart of the rows (PNG), beside a copy of the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name in results["rows"]:
        rows = [r for r in read_metrics(runs / name) if r.get("kind") == "train"]
        if rows:
            ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (sum of terms)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "training_curves.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(results["rows"])), 4), dpi=100)
    names = list(results["rows"])
    values = [results["rows"][n]["point_miou"] for n in names]
    ax.bar(names, values, color=[plt.get_cmap("tab20")(i % 20) for i in range(len(names))])
    ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom")
    ax.set_ylabel("point mIoU (%)")
    ax.set_title("U2MKD demo: synthetic world")
    fig.tight_layout()
    fig.savefig(folder / "point_miou.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    classes = sorted({k[4:] for r in results["per_class"].values() for k in r})
    width = 0.8 / max(1, len(results["per_class"]))
    for i, (name, r) in enumerate(results["per_class"].items()):
        ax.bar(np.arange(len(classes)) + i * width, [100 * r.get(f"iou_{c}", 0.0) for c in classes], width,
               label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=45, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "per_class_iou.png")
    plt.close(fig)
    atomic_write_text(folder / "table.txt", format_rows(results["rows"]) + "\n" + results["verdict"] + "\n")

