"""Seconds per training step (forward + backward + SGD update) of U2MKD's teacher and KD student at the
synthetic configs, on one thread (CPU seconds of this process, so other jobs on the machine do not count):

    OMP_NUM_THREADS=1 python -m benchmarks.u2mkd_step_time [--steps 8] [--out outputs/u2mkd_step_time]
        [--student key=value ...] [key=value ...]   # overrides for both configs (e.g. model.max_points=6000)
                                                    # and for the student's config only

The teacher is `configs/lidar_seg/synthetic.yaml`; the student `configs/u2mkd/synthetic.yaml` with KD from an
untrained teacher of the same architecture (the timing does not depend on its weights). Data: 8 synthetic
nuScenes-format keyframes (rendered once under --out). The first 2 steps are not timed (allocator warm-up).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from xmkd.config import load_config
from xmkd.data.synthetic.synth import SynthOptions, synthesize_indexed
from xmkd.engine.checkpoint import save
from xmkd.recipes import get_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _time_steps(recipe, steps: int, warmup: int = 2) -> float:
    """Mean CPU seconds of one step over `steps` steps after `warmup` untimed ones."""
    nets = [n for k, n in recipe.nets.items() if k not in recipe.frozen()]
    for k, n in recipe.nets.items():
        n.train(k not in recipe.frozen())
        if k in recipe.frozen():
            n.requires_grad_(False)
    params = [p for n in nets for p in n.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    ds = recipe.train_dataset()
    bs = recipe.cfg.data.batch_size
    samples = [ds[(0, i)] for i in range(len(ds))]
    batches = [recipe.collate(samples[i:i + bs]) for i in range(0, len(samples) - bs + 1, bs)]
    times = []
    for s in range(warmup + steps):
        batch = batches[s % len(batches)]
        t0 = time.process_time()
        loss = sum(recipe.training_step(batch, s).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.process_time() - t0)
    return sum(times[warmup:]) / steps


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default="outputs/u2mkd_step_time")
    ap.add_argument("--student", nargs="*", default=[], help="overrides of the student's config only")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    data = synthesize_indexed(SynthOptions(out=str(out / "data"), frames=8, frames_per_scene=4, seed=0,
                                           val_fraction=0.25), "nuscenes", progress=False)
    base = [f"data.root={data}", f"output_dir={out / 'runs'}", "data.num_workers=0", *args.overrides]
    teacher_cls, student_cls = get_recipe("lidar_seg"), get_recipe("u2mkd")
    teacher = teacher_cls(load_config(CONFIGS / "lidar_seg" / "synthetic.yaml", base, schema=teacher_cls.schema),
                          torch.device("cpu"))
    teacher.build()
    ckpt = out / "teacher.pt"
    save(ckpt, {"models": {"net": teacher.nets["net"].state_dict()}})
    result = {"teacher_s_per_step": _time_steps(teacher, args.steps)}
    student = student_cls(load_config(CONFIGS / "u2mkd" / "synthetic.yaml",
                                      [*base, "model.kd=true", f"model.teacher.checkpoint={ckpt}", *args.student],
                                      schema=student_cls.schema), torch.device("cpu"))
    student.build()
    result["student_kd_s_per_step"] = _time_steps(student, args.steps)
    print(f"threads {torch.get_num_threads()}; " + "; ".join(f"{k} {v:.3f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
