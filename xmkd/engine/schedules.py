"""Learning-rate schedules as multiplicative factors of the step (one step = one optimizer update), and the onecycle
schedule's momentum cycle."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from xmkd.errors import XmkdConfigError


def lr_factor(cfg, total_steps: int, world: int = 1) -> Callable[[int], float]:
    """Factor of the base lr at step s for `cfg.train.schedule` (cosine with linear warm-up per iteration,
    multistep, onecycle, constant) when `world` processes train together."""
    name = cfg.name
    if getattr(cfg, "release_warmup", False):
        if name != "cosine":
            raise XmkdConfigError(f"train.schedule.release_warmup applies to the cosine schedule, not {name!r}")
        return _release_cosine(int(cfg.warmup_iters), total_steps, world)
    warm = int(cfg.warmup_iters)
    start = float(cfg.warmup_start_ratio)
    total = max(total_steps, 1)

    def warmup(s: int) -> float | None:
        if warm and s < warm:
            return start + (1.0 - start) * s / warm
        return None

    if name == "cosine":
        floor = float(cfg.min_lr_ratio)

        def f(s: int) -> float:
            w = warmup(s)
            if w is not None:
                return w
            progress = min(1.0, (s - warm) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    elif name == "multistep":
        milestones = sorted(int(m) for m in cfg.milestones)

        def f(s: int) -> float:
            w = warmup(s)
            return w if w is not None else float(cfg.gamma) ** sum(s >= m for m in milestones)
    elif name == "onecycle":
        peak = max(1, int(float(cfg.pct_start) * total))
        end = float(getattr(cfg, "final_ratio", 1e-4))
        if not 0.0 <= end < 1.0:
            raise XmkdConfigError(f"train.schedule.final_ratio: expected the last lr as a fraction of lr in [0, 1), "
                                  f"got {end}")

        def f(s: int) -> float:
            if s < peak:
                return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * s / peak))
            progress = min(1.0, (s - peak) / max(1, total - peak))
            return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))
    elif name == "constant":
        def f(s: int) -> float:
            w = warmup(s)
            return 1.0 if w is None else w
    else:
        raise XmkdConfigError(f"train.schedule.name: unknown schedule {name!r} (cosine, multistep, onecycle, "
                              "constant)")
    return f


def _release_cosine(warmup_iters: int, total_steps: int, world: int) -> Callable[[int], float]:
    """U2MKD's `cosine_schedule_with_warmup` (core/schedulers.py:10-35): warm-up of warmup_iters // world steps
    (0 on one process) rising as (s + 1) / warm-up, then 0.5 (1 + cos(pi (s - warm-up) / total))."""
    warm = 0 if world == 1 else warmup_iters // world
    total = max(total_steps, 1)

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (s - warm) / total))
    return f


def momentum_at(cfg, total_steps: int) -> Callable[[int], float] | None:
    """Adam's beta1 (SGD's momentum) at step s for `cfg.train.schedule.momentum = [high, low]` under the onecycle
    schedule: cosine from high to low while the lr rises (the first `pct_start` of the steps), then back to high
    while it falls, as torch's `OneCycleLR(cycle_momentum=True)` (the HSRDN / CMKD students: BASE_MOM 0.85,
    MAX_MOM 0.95, tools/train_utils/optimization/__init__.py) and OpenPCDet's `OneCycle` (MOMS [0.95, 0.85],
    learning_schedules_fastai.py) cycle it. None when the list is empty. XmkdConfigError for another schedule or
    values outside [0, 1)."""
    moms = [float(v) for v in cfg.momentum]
    if not moms:
        return None
    if cfg.name != "onecycle" or len(moms) != 2 or not all(0.0 <= v < 1.0 for v in moms):
        raise XmkdConfigError(f"train.schedule.momentum: expected [high, low] in [0, 1) with the onecycle schedule, "
                              f"got {moms} with {cfg.name!r}")
    high, low = moms
    total = max(total_steps, 1)
    peak = max(1, int(float(cfg.pct_start) * total))

    def m(s: int) -> float:
        if s < peak:
            return low + (high - low) * 0.5 * (1 + math.cos(math.pi * s / peak))
        progress = min(1.0, (s - peak) / max(1, total - peak))
        return high + (low - high) * 0.5 * (1 + math.cos(math.pi * progress))
    return m


def set_momentum(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set beta1 (Adam, AdamW) or the momentum (SGD) of every parameter group."""
    for group in optimizer.param_groups:
        if "betas" in group:
            group["betas"] = (value, group["betas"][1])
        else:
            group["momentum"] = value
