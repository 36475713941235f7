"""The SECOND teacher (`lidar_det`) at the synthetic config: training step time, and positive anchors per box.

    python -m benchmarks.teacher_grid step    [--iters 30] [--set KEY=VALUE ...]
    python -m benchmarks.teacher_grid anchors [--set data.voxel_size=0.1 ...] [--centred-rotated]

Data: the HSRDN benchmark's seed-0 world (`xmkd synth --format kitti --frames 72 --frames-per-scene 4`, 640 x 192),
written once to outputs/teacher_grid/kitti (`--data` to choose another).

`step` times `--iters` training steps of configs/lidar_det/synthetic.yaml at batch 2 after 3 warm-up steps, in this
process (one thread when OMP_NUM_THREADS=1): the sample building (augmentation included) and the forward + backward
+ AdamW update, each as the median and the mean over the timed steps. It uses only the recipe interface, so it also
times an older checkout (PYTHONPATH=<checkout> python -m benchmarks.teacher_grid step).

`anchors` assigns the anchors of every training box (no augmentation) with the recipe's own assignment and counts,
per class: boxes, mean foreground anchors per box, the share with none, with only one, and with >= 3.
`--centred-rotated` counts with xmkd's former assignment instead (anchors at the cell centres, exact rotated IoU).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

import xmkd
from xmkd.config import load_config
from xmkd.data.synthetic.synth import SynthOptions, synthesize_indexed
from xmkd.recipes import get_recipe

CONFIG = Path(xmkd.__file__).resolve().parents[1] / "configs" / "lidar_det" / "synthetic.yaml"


def build(data: Path, overrides: list[str]):
    recipe_cls = get_recipe("lidar_det")
    cfg = load_config(CONFIG, [f"data.root={data}", "data.num_workers=0", *overrides], schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    return recipe


def step_times(data: Path, overrides: list[str], iters: int) -> None:
    recipe = build(data, overrides)
    net = recipe.nets["net"].train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    ds = recipe.train_dataset()
    t_data, t_step = [], []
    for it in range(iters + 3):
        t0 = time.perf_counter()
        batch = recipe.collate([ds[(it, (2 * it + k) % len(ds))] for k in range(2)])
        t1 = time.perf_counter()
        losses = recipe.training_step(batch, it)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        t2 = time.perf_counter()
        if it >= 3:
            t_data.append(t1 - t0)
            t_step.append(t2 - t1)
    params = sum(p.numel() for p in net.parameters())
    print(f"lidar_det synthetic, batch 2, {iters} steps, {params} parameters, torch threads {torch.get_num_threads()}")
    for name, t in (("samples (augmentation, voxels)", t_data), ("forward + backward + update", t_step)):
        print(f"  {name:<32} median {statistics.median(t):.3f} s   mean {statistics.mean(t):.3f} s")
    print("  last losses: " + ", ".join(f"{k} {float(v.detach()):.4f}" for k, v in losses.items()))


def positive_counts(data: Path, overrides: list[str], centred_rotated: bool = False
                    ) -> tuple[dict[str, list[int]], str]:
    """Per class, the foreground anchors of every training box (no augmentation) under the recipe's assignment,
    and a line naming the frames, the grid and the assignment."""
    from xmkd.models.det.anchors import anchor_classes, generate_anchors
    from xmkd.models.det.targets import assign

    recipe = build(data, overrides)
    m, d = recipe.cfg.model, recipe.cfg.data
    classes = list(OmegaConf.to_object(m.classes))  # AnchorClass instances
    kwargs = {}
    if centred_rotated:
        classes = [dataclasses.replace(c, align_center=True) for c in classes]
        kwargs = {"iou": "rotated"}
    elif m.assign_iou != "nearest_bev":
        kwargs = {"iou": m.assign_iou}
    ny, nx = recipe.grid[1] // 8, recipe.grid[0] // 8
    anchors = generate_anchors(classes, (ny, nx), d.point_range).reshape(-1, 7)
    a_cls = anchor_classes(classes).repeat(ny * nx)
    counts: dict[str, list[int]] = {c.name: [] for c in classes}
    frames = recipe.frames(d.train_split)
    for i in range(len(frames)):
        sample = recipe.make_sample(frames[i], None)
        gt, labels = torch.from_numpy(sample["boxes"]), torch.from_numpy(sample["labels"])
        if not len(gt):
            continue
        t = assign(anchors, a_cls, classes, gt, labels, **kwargs)
        fg = torch.nonzero(t.labels >= 0).squeeze(1)
        which = (t.boxes[fg][:, None, :] == gt[None].to(t.boxes.dtype)).all(-1).float().argmax(1)
        per_box = torch.bincount(which, minlength=len(gt))
        for j in range(len(gt)):
            counts[classes[int(labels[j])].name].append(int(per_box[j]))
    cell = (d.point_range[3] - d.point_range[0]) / nx
    form = "cell-centre anchors, rotated BEV IoU" if centred_rotated else "release anchors and nearest-BEV IoU"
    return counts, f"{len(frames)} training frames, BEV {ny} x {nx} cells of {cell:.2f} m, {form}"


def positives(data: Path, overrides: list[str], centred_rotated: bool) -> None:
    counts, title = positive_counts(data, overrides, centred_rotated)
    print(title)
    print(f"  {'class':<12} {'boxes':>6} {'fg/box':>7} {'none':>6} {'one':>6} {'>=3':>6}")
    for name, values in counts.items():
        n = np.asarray(values)
        if len(n):
            print(f"  {name:<12} {len(n):>6} {n.mean():>7.2f} {np.mean(n == 0):>6.0%} {np.mean(n == 1):>6.0%} "
                  f"{np.mean(n >= 3):>6.0%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["step", "anchors"])
    p.add_argument("--data", default="outputs/teacher_grid/kitti")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--set", action="append", default=[], help="a config override KEY=VALUE (repeatable)")
    p.add_argument("--centred-rotated", action="store_true")
    args = p.parse_args()
    data = synthesize_indexed(SynthOptions(out=args.data, format="kitti", frames=72, frames_per_scene=4, seed=0,
                                           image_size=(640, 192), workers=1), "kitti_object", progress=False)
    if args.what == "step":
        step_times(data, args.set, args.iters)
    else:
        positives(data, args.set, args.centred_rotated)


if __name__ == "__main__":
    main()
