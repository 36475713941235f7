"""Cross-modal UDA on the synthetic world, day -> night, 3 seeds: source-only, xMUDA, FtD++, FtD++ + pseudo-labels
and the target-only oracle; 2D / 3D / xM mIoU on the night validation split, mean +- std.

    python -m benchmarks uda            # resumable: finished runs are reused

Per seed S: a day set (`xmkd synth --preset day --seed S`) and a night set (seed S + 100), 40 keyframes each, then
the five rows for `STEPS` iterations each (the PL row retrains from FtD++'s pseudo-labels). Outputs in
outputs/bench_uda/seed<S>/; the table is printed and written to outputs/bench_uda/table.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from xmkd.config import load_config, peek_recipe
from xmkd.data.index import prepare
from xmkd.data.synthetic.synth import SynthOptions, synthesize
from xmkd.engine.logging import read_metrics
from xmkd.engine.predict import pseudo_label_split
from xmkd.engine.trainer import Trainer
from xmkd.io import atomic_write_text
from xmkd.recipes import get_recipe

OUT = Path(os.environ.get("XMKD_BENCH_OUT", "outputs/bench_uda"))
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STEPS = 120
COLUMNS = ("miou_2d", "miou_3d", "miou_xm")


def train(config: str, overrides: list[str], run: Path, steps: int) -> dict[str, float]:
    recipe = get_recipe(peek_recipe(CONFIGS / config))
    cfg = load_config(CONFIGS / config, [*overrides, f"train.max_iters={steps}", f"train.val_every={steps}",
                                         f"train.ckpt_every={max(1, steps // 3)}"], schema=recipe.schema)
    done = [r for r in read_metrics(run) if r.get("kind") == "val" and r.get("step") == steps]
    if done:
        return done[-1]
    return Trainer(cfg, recipe, resume=(run / "checkpoints" / "last.pt").exists(), progress=True).fit()


def dataset(root: Path, preset: str, seed: int) -> Path:
    synthesize(SynthOptions(out=str(root), preset=preset, frames=40, frames_per_scene=4, seed=seed,
                            image_size=(400, 225), cameras=("CAM_FRONT",), sweeps=False, workers=2))
    if not (root / "xmkd_index" / "index.json").exists():
        prepare("nuscenes", root, root / "xmkd_index")
    return root


def run_seed(seed: int, steps: int = STEPS) -> dict[str, dict[str, float]]:
    folder = OUT / f"seed{seed}"
    day, night = dataset(folder / "day", "day", seed), dataset(folder / "night", "night", seed + 100)
    runs = folder / "runs"
    base = [f"data.root={day}", f"target.root={night}", f"output_dir={runs}", f"seed={seed}", "data.num_workers=1",
            "train.log_every=10"]
    rows = {
        "source-only": train("xmuda/synthetic_day_night.yaml", [*base, "name=source_only", "model.lambda_xm_src=0",
                                                                "model.lambda_xm_trg=0"], runs / "source_only", steps),
        "xMUDA": train("xmuda/synthetic_day_night.yaml", [*base, "name=xmuda"], runs / "xmuda", steps),
        "FtD++": train("ftd/synthetic_day_night.yaml", [*base, "name=ftd"], runs / "ftd", steps),
    }
    pl = folder / "pl.npz"
    if not pl.exists():
        pseudo_label_split(runs / "ftd", "synthetic_train", pl, progress=False)
    rows["FtD++ + PL"] = train("ftd/synthetic_day_night.yaml", [*base, "name=ftd_pl", "model.lambda_pl=1.0",
                                                                f"model.pseudo_labels={pl}"], runs / "ftd_pl", steps)
    rows["target-only"] = train("xmuda/synthetic_day_night.yaml", [
        f"data.root={night}", f"target.root={night}", f"output_dir={runs}", f"seed={seed}", "data.num_workers=1",
        "name=oracle", "model.lambda_xm_src=0", "model.lambda_xm_trg=0"], runs / "oracle", steps)
    atomic_write_text(folder / "results.json", json.dumps(rows, indent=1))
    return rows


def main(seeds: tuple[int, ...] = (0, 1, 2)) -> None:
    per_seed = [run_seed(s) for s in seeds]
    lines = ["| row | 2D mIoU | 3D mIoU | xM mIoU |", "|---|---|---|---|"]
    for row in per_seed[0]:
        values = [[100 * r[row][c] for r in per_seed] for c in COLUMNS]
        cells = [f"{np.mean(v):.2f} ± {np.std(v):.2f}" for v in values]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    atomic_write_text(OUT / "table.md", table + "\n")
    print(f"Cross-modal UDA, synthetic day -> night ({len(seeds)} seeds, %, mean ± std)")
    print(table)
