"""`xmkd demo`: U2MKD end to end on the synthetic world, small enough for a 2-core CPU.

1. render a small synthetic nuScenes-format dataset (LiDAR with sweeps, three front cameras) and index it;
2. train the LiDAR teacher (`lidar_seg`, keyframe + 2 sweeps);
3. train, from the same seed and for the same number of steps, the LiDAR-only student (`lidar_seg`, single
   sweep), the camera-only SwiftNet (`camera_seg`), the LiDAR + camera student without distillation
   (`u2mkd`, kd=false) and with distillation from the teacher (`u2mkd`);
4. print one table (point mIoU, pixel mIoU, mIoU with cameras dropped), write `results.json` and a report
   folder (training curves, per-class IoU bars, prediction overlays on validation frames).
Everything lands under `--out` (default outputs/demo). Re-running reuses the dataset and finished runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmkd.config import CONFIG_DIR
from xmkd.data.synthetic.synth import SynthOptions, synthesize_indexed
from xmkd.engine.logging import read_metrics
from xmkd.engine.trainer import train_or_reuse
from xmkd.io import atomic_write_text


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


BUDGETS = {"demo": DemoBudget(),
           "tiny": DemoBudget(frames=6, frames_per_scene=3, teacher_steps=4, student_steps=3, max_points=2000),
           # benchmarks/bench_u2mkd.py: longer schedules, more data, and the KD ablations
           "bench": DemoBudget(frames=40, teacher_steps=240, student_steps=120, ablations=True)}

# checkpoints every 40 iterations (a resume point, without writing the 250 MB student state at every step)
COMMON = ["data.num_workers=1", "train.log_every=10", "train.ckpt_every=40", "data.voxel_size=0.4",
          "data.point_range=[-38.4,-38.4,-4.8,38.4,38.4,4.8]", "model.backbone.cr=0.25", "model.backbone.blocks=1",
          "model.backbone.window=2.4"]  # the release's 6 voxels


def _train(config: str, overrides: list[str], run_dir: Path) -> dict[str, float]:
    return train_or_reuse(CONFIG_DIR / config, overrides, run_dir)


def run_demo(out: str | Path = "outputs/demo", seed: int = 0, budget: str = "demo") -> dict[str, Any]:
    b = BUDGETS[budget]
    out = Path(out)
    start = time.perf_counter()
    data = out / "data"
    print(f"[1/4] synthetic dataset -> {data}")
    synthesize_indexed(SynthOptions(out=str(data), preset="day", format="nuscenes", frames=b.frames,
                                    frames_per_scene=b.frames_per_scene, seed=seed, image_size=b.image_size,
                                    cameras=b.cameras, val_fraction=0.25, workers=2), "nuscenes")
    runs = out / "runs"
    base = [f"data.root={data}", f"output_dir={runs}", f"seed={seed}", *COMMON]
    print("[2/4] teacher (LiDAR, keyframe + 2 sweeps)")
    teacher = _train("lidar_seg/synthetic.yaml", [*base, "name=teacher", "data.sweeps=2",
                                                 f"train.max_iters={b.teacher_steps}",
                                                 f"train.val_every={b.teacher_steps}",
                                                 f"model.max_points={b.max_points * 2}",
                                                 f"model.backbone.cr={b.teacher_cr}"], runs / "teacher")
    teacher_ckpt = runs / "teacher" / "checkpoints" / "last.pt"
    student = [f"train.max_iters={b.student_steps}", f"train.val_every={b.student_steps}",
               f"model.max_points={b.max_points}"]
    u2 = [f"data.image_size=[{b.image_size[0]},{b.image_size[1]}]", "model.camera_drop=1", "model.eval_camera_drop=2",
          "model.decoder_width=64", f"model.teacher.backbone.cr={b.teacher_cr}", "model.teacher.backbone.blocks=1",
          "model.teacher.backbone.window=2.4"]
    print("[3/4] students: LiDAR only, camera only, LiDAR + camera without KD, LiDAR + camera with KD")
    rows = {"teacher": teacher,
            "student_lidar_only": _train("lidar_seg/synthetic.yaml", [*base, "name=student_lidar_only", *student],
                                         runs / "student_lidar_only"),
            "camera_only": _train("camera_seg/synthetic.yaml", [*base, "name=camera_only", *student, *u2],
                                  runs / "camera_only"),
            "student_nokd": _train("u2mkd/synthetic.yaml", [*base, "name=student_nokd", "model.kd=false", *student,
                                                            *u2], runs / "student_nokd"),
            "student_kd": _train("u2mkd/synthetic.yaml", [*base, "name=student_kd", "model.kd=true",
                                                          f"model.teacher.checkpoint={teacher_ckpt}", "data.sweeps=2",
                                                          *student, *u2], runs / "student_kd")}
    if b.ablations:  # which distillation term helps or hurts: KL alone, feature imitation alone
        for name, weights in (("student_kd_kl_only", ["model.w_feat=0"]), ("student_kd_feat_only", ["model.w_kl=0"])):
            rows[name] = _train("u2mkd/synthetic.yaml", [*base, f"name={name}", "model.kd=true", *weights,
                                                         f"model.teacher.checkpoint={teacher_ckpt}", "data.sweeps=2",
                                                         *student, *u2], runs / name)
    print("[4/4] results")
    results = {"rows": {k: _percent(v) for k, v in rows.items()}, "budget": budget, "seed": seed,
               "seconds": round(time.perf_counter() - start, 1),
               "per_class": {k: {m: x for m, x in v.items() if m.startswith("iou_")} for k, v in rows.items()}}
    table = format_rows(results["rows"])
    kd, nokd = results["rows"]["student_kd"]["point_miou"], results["rows"]["student_nokd"]["point_miou"]
    verdict = (f"student with KD is ahead of the student without KD by {kd - nokd:.2f} point mIoU" if kd > nokd else
               f"student with KD is NOT ahead of the student without KD ({kd:.2f} vs {nokd:.2f} point mIoU) at this "
               "budget")
    if "camera_only" in rows:
        verdict += ("\n(camera_only: point mIoU over every point, those outside the cameras counted as misses; "
                    "coverage = % of labelled points inside a camera)")
    results["verdict"] = verdict
    report = out / "report"
    write_report(report, runs, results)
    overlays = write_overlays(report, runs, list(rows))
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    print(table)
    print(verdict)
    print(f"results: {out / 'results.json'}; report: {report}/ ({len(overlays)} prediction overlays); runs: {runs}/ "
          f"({results['seconds']:.0f} s)")
    return results


def write_overlays(folder: Path, runs: Path, names: list[str], frames: int = 2) -> list[Path]:
    """Ground truth and every row's predictions on the first validation frames (camera + bird's-eye view)."""
    from xmkd.engine.predict import load_trained, predict_frame
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
    lines = [f"{'':<20}" + "".join(f"{c:>18}" for c in cols)]
    for name, r in rows.items():
        lines.append(f"{name:<20}" + "".join(f"{r[c]:>18.2f}" if c in r else f"{'-':>18}" for c in cols))
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
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    names = list(results["rows"])
    values = [results["rows"][n]["point_miou"] for n in names]
    ax.bar(names, values, color=["#555555", "#8888cc", "#aa66aa", "#cc8844", "#44aa66", "#66ccaa", "#aacc66"][
        : len(names)])
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

