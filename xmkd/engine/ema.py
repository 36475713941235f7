"""Exponential moving average of a module's weights (mean teachers)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """`shadow = a * shadow + (1 - a) * model`, with a = min(1 - 1 / (step + 1), decay) (FtD++'s rule: the
    average starts as the true mean and slows down to `decay`).

    Default: the shadow starts as a copy of `model` at step 0, in eval mode, with the model's buffers (BatchNorm
    statistics) copied at every update. The mean-teacher setup of FtD++'s release
    (FTD:xmuda/train_dn_bftd_uni.py#L62-L67,L78-L80,L189-L191,L433-L436) is `shadow=` an independently built
    module of the same architecture, `step=1` (its first update averages with a = 0.5) and `train_mode=True`: the
    teacher predicts with batch statistics and active dropout, keeps its own BatchNorm buffers (its forward passes
    update them; they are never copied from the student) and only its parameters are averaged."""

    def __init__(self, model: nn.Module, decay: float = 0.999, shadow: nn.Module | None = None, step: int = 0,
                 train_mode: bool = False):
        self.decay = decay
        self.train_mode = train_mode
        self.module = (copy.deepcopy(model) if shadow is None else shadow).train(train_mode)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.step = step

    def alpha(self) -> float:
        return min(1.0 - 1.0 / (self.step + 1), self.decay)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        a = self.alpha()
        src = dict(model.named_parameters())
        for name, p in self.module.named_parameters():
            p.mul_(a).add_(src[name].detach(), alpha=1 - a)
        if not self.train_mode:  # an eval-mode teacher predicts with the student's statistics
            src_buffers = dict(model.named_buffers())
            for name, b in self.module.named_buffers():
                b.copy_(src_buffers[name])
        self.step += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "step": self.step, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.step = int(state["step"])
        self.decay = float(state["decay"])
