"""Per-term gradient norms of an HSRDN student: how hard each loss pulls on the student's parameters, at its
initialisation or at a checkpoint, for several relation floors (`model.relation_floor`; 0 = plain RKD), with xmkd's
relation gradient on, whatever `--set` says (`model.relation_gradient=true`: as released the relation terms send no
gradient, and there would be nothing to measure).

    OMP_NUM_THREADS=1 python -m benchmarks.hsrdn_grad_norms --data outputs/bench_hsrdn/seed0/kitti \\
        --teacher outputs/bench_hsrdn/seed0/runs/teacher/checkpoints/last.pt [--student CKPT] [--batches 4] \\
        [--set KEY=VALUE ...]   # e.g. the benchmark's grid: --set data.voxel_size=0.0625 ...

Prints, per floor, the mean over `--batches` training batches of || d(term) / d(student parameters) || for every
loss term of configs/hsrdn/synthetic.yaml (weights included), and the gradient clip of that config.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from xmkd.config import load_config
from xmkd.recipes import get_recipe

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "hsrdn" / "synthetic.yaml"


def grad_norms(data: str, teacher: str, student: str = "", floor: float = 0.1, batches: int = 4,
               seed: int = 0, overrides: tuple[str, ...] = ()) -> tuple[dict[str, float], float]:
    """The mean gradient norm of each loss term (the detection stage's), and the config's gradient clip."""
    recipe_cls = get_recipe("hsrdn")
    cfg = load_config(CONFIG, [f"data.root={data}", f"model.teacher_checkpoint={teacher}",
                               f"model.relation_floor={floor}", "data.num_workers=0",
                               f"model.student.init={student}", *overrides, "model.relation_gradient=true"],
                      schema=recipe_cls.schema)
    torch.manual_seed(seed)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    net = recipe.nets["net"]
    recipe.nets["teacher"].eval().requires_grad_(False)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    dataset = recipe.train_dataset()
    norms: dict[str, list[float]] = {}
    for b in range(batches):
        batch = recipe.collate([dataset[(0, 2 * b)], dataset[(0, 2 * b + 1)]])
        losses = recipe.training_step(batch, 0)
        for name, value in losses.items():
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            norms.setdefault(name, []).append(float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None))))
    return {name: float(np.mean(v)) for name, v in norms.items()}, cfg.train.grad_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a synthetic KITTI-format root with its xmkd_index")
    parser.add_argument("--teacher", required=True, help="a lidar_det checkpoint")
    parser.add_argument("--student", default="", help="a student run's checkpoint (default: its initialisation; "
                        "the BEV backbone and head are re-copied from the teacher, as the detection stage does)")
    parser.add_argument("--floors", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    args = parser.parse_args()
    rows = {f: grad_norms(args.data, args.teacher, args.student, f, args.batches, overrides=tuple(args.set))
            for f in args.floors}
    first, clip = next(iter(rows.values()))
    names = list(first)
    print(f"gradient norm of each term w.r.t. the student's parameters (mean over batches; the config clips the "
          f"total at {clip:g})")
    print("| relation_floor | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for floor, (row, _) in rows.items():
        print(f"| {floor:g} | " + " | ".join(f"{row[n]:.3g}" for n in names) + " |")


if __name__ == "__main__":
    main()
