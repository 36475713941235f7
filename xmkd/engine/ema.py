"""Exponential moving average of a module's weights (mean teachers)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """`shadow = a * shadow + (1 - a) * model`, with a = min(1 - 1 / (step + 1), decay) (FtD++'s rule: the
    average starts as a copy and slows down to `decay`). Buffers (BatchNorm statistics) are copied."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.step = 0

    def alpha(self) -> float:
        return min(1.0 - 1.0 / (self.step + 1), self.decay)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        a = self.alpha()
        src = dict(model.named_parameters())
        for name, p in self.module.named_parameters():
            p.mul_(a).add_(src[name].detach(), alpha=1 - a)
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
