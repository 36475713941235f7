"""HSRDN on the synthetic KITTI-format world, 3 seeds: the SECOND teacher, the monocular student trained on ground
truth only, CMKD (BEV feature + response distillation) and HSRDN (+ within-sample relations); KITTI AP_R40 at the
moderate difficulty, 3D and BEV, per class, at the strict (Car 0.7) and the loose (Car 0.5) overlaps, mean +- std
over seeds.

    python -m benchmarks hsrdn                        # resumable: finished runs are reused
    python -m benchmarks.bench_hsrdn --seeds 0        # some seeds only (the table covers the seeds given)

Per seed S: `xmkd synth --format kitti --frames 72 --seed S` at 640x192 (KITTI's aspect), then
`configs/lidar_det/synthetic.yaml` for `TEACHER_STEPS` iterations and the three students
(`configs/hsrdn/mono_gt_synthetic.yaml`, `configs/cmkd/synthetic.yaml`, `configs/hsrdn/synthetic.yaml`) for
`STUDENT_STEPS` iterations each. Outputs in outputs/bench_hsrdn/seed<S>/; the table is printed and written to
outputs/bench_hsrdn/table.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from xmkd.data.synthetic.synth import SynthOptions, synthesize_indexed
from xmkd.engine.trainer import train_or_reuse
from xmkd.io import atomic_write_text

OUT = Path(os.environ.get("XMKD_BENCH_OUT", "outputs/bench_hsrdn"))
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROWS = {"teacher (SECOND)": "lidar_det/synthetic.yaml", "student, GT only": "hsrdn/mono_gt_synthetic.yaml",
        "CMKD": "cmkd/synthetic.yaml", "HSRDN": "hsrdn/synthetic.yaml"}
METRICS = [f"{c}_{m}_r40_moderate{o}" for c in ("car", "pedestrian", "cyclist") for o in ("", "_loose")
           for m in ("3d", "bev")]
TEACHER_STEPS, STUDENT_STEPS = 1200, 600


def train(config: str, overrides: list[str], run: Path) -> dict[str, float]:
    return train_or_reuse(CONFIGS / config, overrides, run)


def run_seed(seed: int, teacher_steps: int = TEACHER_STEPS, student_steps: int = STUDENT_STEPS
             ) -> dict[str, dict[str, float]]:
    folder = OUT / f"seed{seed}"
    data = folder / "kitti"
    synthesize_indexed(SynthOptions(out=str(data), format="kitti", frames=72, frames_per_scene=4, seed=seed,
                                    image_size=(640, 192), workers=2), "kitti_object")
    runs = folder / "runs"
    base = [f"data.root={data}", f"output_dir={runs}", f"seed={seed}", "data.num_workers=1", "train.log_every=10"]
    rows = {}
    teacher = "teacher (SECOND)"
    rows[teacher] = train(ROWS[teacher], [*base, "name=teacher", f"train.max_iters={teacher_steps}",
                                          f"train.val_every={teacher_steps}", "train.ckpt_every=300"], runs / "teacher")
    ckpt = runs / "teacher" / "checkpoints" / "last.pt"
    for name in list(ROWS)[1:]:
        slug = {"student, GT only": "mono_gt", "CMKD": "cmkd", "HSRDN": "hsrdn"}[name]
        extra = [] if name == "student, GT only" else [f"model.teacher_checkpoint={ckpt}"]
        rows[name] = train(ROWS[name], [*base, f"name={slug}", f"train.max_iters={student_steps}",
                                        f"train.val_every={student_steps}", "train.ckpt_every=40", *extra],
                           runs / slug)
    atomic_write_text(folder / "results.json", json.dumps(rows, indent=1))
    return rows


def main(seeds: tuple[int, ...] = (0, 1, 2), teacher_steps: int = TEACHER_STEPS, student_steps: int = STUDENT_STEPS
         ) -> None:
    per_seed = [run_seed(s, teacher_steps, student_steps) for s in seeds]
    lines = ["| row | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for row in ROWS:
        cells = []
        for m in METRICS:
            v = [r[row][m] for r in per_seed if m in r[row]]
            cells.append(f"{np.mean(v):.2f} ± {np.std(v):.2f}" if v else "-")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    atomic_write_text(OUT / "table.md", table + "\n")
    print(f"HSRDN synthetic benchmark ({len(seeds)} seeds, teacher {teacher_steps} / students {student_steps} "
          "iterations, AP_R40 moderate, mean ± std)")
    print(table)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-steps", type=int, default=TEACHER_STEPS)
    parser.add_argument("--student-steps", type=int, default=STUDENT_STEPS,
                        help="iterations per student (runs of another count would resume under the new schedule: "
                             "give each count its own XMKD_BENCH_OUT)")
    args = parser.parse_args()
    main(tuple(args.seeds), args.teacher_steps, args.student_steps)
