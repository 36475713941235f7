"""Training-engine throughput: steps per second and the share of step time spent waiting for data.

    python -m benchmarks engine

Runs `configs/point_mlp/synthetic.yaml` (the smallest real recipe; the U2MKD demo configuration replaces it
once that recipe exists) on a 20-keyframe synthetic nuScenes set for 40 iterations, with 0, 1 and 2 data
workers. Goal: data wait < 10 % of step time.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from xmkd.config import load_config
from xmkd.data.index import prepare
from xmkd.data.synthetic.synth import SynthOptions, synthesize
from xmkd.engine.trainer import Trainer
from xmkd.recipes import get_recipe

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "point_mlp" / "synthetic.yaml"


def main(iters: int = 40) -> None:
    recipe = get_recipe("point_mlp")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "nus")
        synthesize(SynthOptions(out=root, frames=20, frames_per_scene=4, image_size=(320, 180), workers=2),
                   progress=False)
        prepare("nuscenes", root, os.path.join(root, "xmkd_index"), progress=False)
        for workers in (0, 1, 2):
            cfg = load_config(CONFIG, [f"data.root={root}", f"output_dir={tmp}/runs", f"name=w{workers}",
                                       f"data.num_workers={workers}", f"train.max_iters={iters}",
                                       f"train.val_every={iters}", f"train.ckpt_every={iters}"], schema=recipe.schema)
            trainer = Trainer(cfg, recipe, progress=False)
            start = time.perf_counter()
            trainer.fit()
            wall = time.perf_counter() - start
            rows.append((workers, iters / trainer.step_time, 100 * trainer.data_wait / trainer.step_time, wall))
    print(f"\nengine: point_mlp on synthetic nuScenes, batch 4, {iters} iterations (wall time includes validation)")
    print(f"{'workers':>8} {'steps/s':>8} {'data wait %':>12} {'wall s':>8}")
    for w, sps, wait, wall in rows:
        print(f"{w:>8} {sps:>8.2f} {wait:>12.1f} {wall:>8.1f}")


if __name__ == "__main__":
    main()
