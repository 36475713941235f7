"""Where one UDA training step spends its time: xmuda vs ftd (or any recipe of the UDA benchmark) on the synthetic
day -> night config, a few steps on one thread, timed by phase and by module, plus the top operators of one step
(torch.profiler).

    OMP_NUM_THREADS=1 python -m benchmarks.uda_step --root outputs/bench_uda/day-night/seed0 --steps 3 xmuda ftd

`--root` holds the `day` and `night` sets of one benchmark seed (`python -m benchmarks uda` writes them); nothing is
written there (runs go to a temporary folder). Timings are wall-clock seconds per step after one warm-up step; the
module rows (indented) time the student's forward of each network and the teacher's MFFM, and overlap the phase
rows. Docs: docs/benchmarks.md, UDA section.
"""

from __future__ import annotations

import argparse
import collections
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from xmkd.config import load_config, peek_recipe
from xmkd.engine.checkpoint import unwrap
from xmkd.engine.trainer import make_optimizer
from xmkd.recipes import get_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def timed(table: dict[str, float], name: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            table[name] += time.perf_counter() - start
    return wrapper


def profile_recipe(method: str, root: Path, steps: int, ops: int) -> str:
    """Builds `method`'s synthetic day -> night recipe on `root`, runs 1 + `steps` training steps (batch 2 + 2, as
    the benchmark) and returns the per-phase / per-module table (seconds per step) and, with `ops` > 0, the top
    `ops` operators of one more step by self CPU time."""
    path = CONFIGS / method / "synthetic_day_night.yaml"
    recipe_cls = get_recipe(peek_recipe(path))
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(path, [f"data.root={root / 'day'}", f"target.root={root / 'night'}", f"output_dir={out}",
                                 "seed=0", "data.num_workers=0"], schema=recipe_cls.schema)
        torch.manual_seed(0)
        recipe = recipe_cls(cfg, torch.device("cpu"))
        recipe.build()
        optimizers = [make_optimizer(cfg, g) for g in recipe.param_groups().values()]
        emas = recipe.emas()
        table: dict[str, float] = collections.defaultdict(float)
        for name in ("teacher_outputs", "forward"):
            if hasattr(recipe, name):
                setattr(recipe, name, timed(table, f"  {name}", getattr(recipe, name)))
        modules = {"net2d": recipe.nets["net2d"]["backbone"], "net3d": recipe.nets["net3d"]["backbone"]}
        if "fusion" in recipe.nets:
            modules["MFFM"] = recipe.nets["fusion"]["mffm"]
        for key, module in modules.items():
            module.forward = timed(table, f"    student {key} forward", module.forward)
        if "fusion" in emas:
            teacher = emas["fusion"].module["mffm"]
            teacher.forward = timed(table, "    teacher MFFM forward", teacher.forward)
        dataset = recipe.train_dataset()
        for net in recipe.nets.values():
            net.train()

        def step(i: int) -> None:
            t0 = time.perf_counter()
            batch = recipe.collate([dataset[(0, 2 * i)], dataset[(0, 2 * i + 1)]])
            t1 = time.perf_counter()
            total = sum(recipe.training_step(batch, i).values())
            t2 = time.perf_counter()
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            total.backward()
            t3 = time.perf_counter()
            for o in optimizers:
                o.step()
            for name, ema in emas.items():
                ema.update(unwrap(recipe.nets[name]))
            t4 = time.perf_counter()
            for k, v in (("data + collate", t1 - t0), ("training_step (forward + losses)", t2 - t1),
                         ("backward", t3 - t2), ("optimizer + EMA", t4 - t3), ("step", t4 - t0)):
                table[k] += v

        step(0)
        table.clear()
        for i in range(1, steps + 1):
            step(i)
        lines = [f"{method}: seconds per step ({steps} steps after one warm-up, 1 thread)"]
        lines += [f"  {k:36s} {v / steps:7.2f}" for k, v in table.items()]
        if ops:
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step(steps + 1)
            lines.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=ops))
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("methods", nargs="*", default=["xmuda", "ftd"])
    parser.add_argument("--root", type=Path, default=Path("outputs/bench_uda/day-night/seed0"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--ops", type=int, default=0, help="also print the top N operators of one step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for method in args.methods:
        print(profile_recipe(method, args.root, args.steps, args.ops))


if __name__ == "__main__":
    main()
