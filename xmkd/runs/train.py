"""Train a config into a run directory, or reuse the run when it has finished (the demo and the benchmarks are
sequences of these)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from xmkd.config import load_config, peek_recipe
from xmkd.engine.checkpoint import is_intact
from xmkd.engine.logging import read_metrics
from xmkd.engine.trainer import Trainer
from xmkd.errors import XmkdError
from xmkd.recipes import get_recipe
from xmkd.runs.config_changes import resume_check


def train_or_reuse(config: str | Path, overrides: Sequence[str], run_dir: str | Path, progress: bool = True,
                   bar_position: int | None = None) -> dict[str, float]:
    """Train `config` with `overrides` into `run_dir` unless that run already finished (its log holds the validation
    of the final step and its last checkpoint exists); an interrupted run resumes. Returns the final validation
    metrics (the demo and the training benchmarks are sequences of these). `bar_position`: the progress bar's line
    (tqdm `position`) when runs train side by side. Raises XmkdError when `run_dir` holds a run (finished or not)
    trained with another recipe or config on any key that changes what is trained (`config_changes.resume_check`:
    another `train.max_iters`, a default that changed since, another override; each key with both values), whose
    saved config cannot be read (naming the file), or a
    finished run whose last checkpoint is not a whole torch archive (cut short, damaged bytes, another file;
    `xmkd.engine.checkpoint.is_intact`)."""
    run_dir = Path(run_dir)
    recipe = get_recipe(peek_recipe(config, overrides))
    cfg = load_config(config, overrides, schema=recipe.schema)
    last = run_dir / "checkpoints" / "last.pt"
    done = [r for r in read_metrics(run_dir) if r.get("kind") == "val" and r.get("step") == cfg.train.max_iters]
    if done and last.exists() and not is_intact(last):  # a cut, damaged or foreign file would pass as finished
        raise XmkdError(f"{last}: the finished run's last checkpoint is damaged (not an archive written by "
                        f"torch.save); delete {run_dir} to train it again")
    if last.exists():  # a run to resume or reuse: the same one? (its config.yaml, else the one last.pt stores)
        resume_check(run_dir, cfg)
    if done and last.exists():
        return {k: v for k, v in done[-1].items() if k not in ("step", "kind", "time")}
    return Trainer(cfg, recipe, resume=last.exists(), progress=progress, bar_position=bar_position).fit()
