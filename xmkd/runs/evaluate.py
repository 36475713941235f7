"""`xmkd eval RUN_DIR`: evaluate a run's default checkpoint (its recipe's `default_checkpoints`: best.pt, or the UDA
recipes' last.pt) or a given one, or every saved one with a curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from xmkd.engine import checkpoint, distributed
from xmkd.engine.data import EvalSampler, make_loader, to_device
from xmkd.engine.logging import summary_table
from xmkd.errors import XmkdError
from xmkd.io import atomic_write_text
from xmkd.runs.run_dir import run_config


def _checkpoints(run_dir: Path, ckpt: str | None, every: bool, order: tuple[str, ...]) -> list[Path]:
    folder = run_dir / "checkpoints"
    if ckpt:
        return [Path(ckpt)]
    if every:
        snaps = sorted(folder.glob("step_*.pt"))
        last = folder / "last.pt"
        if not snaps and not last.exists():
            raise XmkdError(f"{folder}: no checkpoints")
        return snaps or [last]
    return [checkpoint.best_or_last(run_dir, order)]


def evaluate_run(run_dir: str | Path, ckpt: str | None = None, every: bool = False, json_out: str | None = None,
                 progress: bool = True) -> dict[str, dict[str, Any]]:
    run_dir = Path(run_dir)
    recipe_cls, cfg = run_config(run_dir)
    device = distributed.init(cfg.device)
    recipe = recipe_cls(cfg, device)
    recipe.build()
    val_set = recipe.val_dataset()
    results: dict[str, dict[str, Any]] = {}
    paths = _checkpoints(run_dir, ckpt, every, recipe_cls.default_checkpoints)
    for path in tqdm(paths, desc="eval", disable=not progress):
        state = checkpoint.restore_nets(recipe.nets, path, device)
        loader = make_loader(val_set, EvalSampler(len(val_set), distributed.rank(), distributed.world_size()),
                             cfg.data.batch_size, recipe.collate, cfg.data.num_workers, device.type == "cuda", False)
        with torch.no_grad():
            metrics = recipe.validate(to_device(b, device) for b in loader)
        results[path.name] = {"step": int(state.get("step", 0)), **metrics}
    if distributed.is_main():
        print(summary_table({k: {m: v for m, v in r.items() if m != "step"} for k, r in results.items()},
                            title=f"{cfg.name}: {recipe_cls.name}, validation split ({len(val_set)} frames)"))
        if every and len(results) > 1:
            curve = plot_curve(results, run_dir / "eval_curve.png", cfg.train.best_metric)
            print(f"curve: {curve}")
        if json_out:
            atomic_write_text(json_out, json.dumps(results, indent=1))
    return results


def plot_curve(results: dict[str, dict[str, Any]], out: Path, metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(results.values(), key=lambda r: r["step"])
    metrics = [m for m in rows[0] if m != "step" and all(m in r for r in rows)]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for m in metrics:
        ax.plot([r["step"] for r in rows], [r[m] for r in rows], marker="o", label=m, linewidth=2 if m == metric else 1)
    ax.set_xlabel("iteration")
    ax.set_title(f"{out.parent.name}: validation metrics per checkpoint")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
