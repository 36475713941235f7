"""The contract between a recipe (a method) and the engine (the loop)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from xmkd.config import ExperimentConfig
from xmkd.engine.ema import EMA
from xmkd.errors import XmkdDataError


class Recipe:
    """Subclasses set `name` and `schema` (their config dataclass) and implement the methods below.

    Models live in `self.nets` (name -> module). The engine may replace an entry with its
    DistributedDataParallel wrapper, so recipes call `self.nets[name](...)` and never keep other references.
    Names in `frozen()` are teachers: kept in eval mode with gradients off, never wrapped, never optimised.
    """

    name = ""
    schema: type = ExperimentConfig
    # the saved checkpoint `xmkd eval` / `predict` / `infer` / `pseudo-label` use when none is given: the first that
    # exists (best.pt: the best validation of `train.best_metric`)
    default_checkpoints: tuple[str, ...] = ("best.pt", "last.pt")
    # config key -> groups of values this recipe treats alike (a resumed or reused run whose saved value and the
    # requested one share a group is the same run: `xmkd.runs.config_changes`)
    same_values: ClassVar[dict[str, list[list[Any]]]] = {}

    def __init__(self, cfg: Any, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.nets: dict[str, nn.Module] = {}

    # -- models and optimisation ------------------------------------------------------------------------
    def build(self) -> None:
        """Create `self.nets` (on `self.device`) and load any pretrained/teacher weights."""
        raise NotImplementedError

    def frozen(self) -> set[str]:
        return set()

    def param_groups(self) -> dict[str, list[dict[str, Any]]]:
        """Optimizer name -> torch param groups; one optimizer over every trainable module by default."""
        params = [p for n, m in self.nets.items() if n not in self.frozen() for p in m.parameters() if p.requires_grad]
        return {"main": [{"params": params}]}

    def emas(self) -> dict[str, EMA]:
        """EMA copies the engine updates after every step and checkpoints (mean teachers)."""
        return {}

    # -- data -------------------------------------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def val_dataset(self) -> Dataset:
        raise NotImplementedError

    def collate(self, samples: list[Any]) -> Any:
        raise NotImplementedError

    def frames(self, split: str) -> Any:
        """The frames of a split (an `IndexedFrames`); `xmkd predict` reads samples from it."""
        raise NotImplementedError(f"recipe {self.name!r} does not read frames by split")

    def make_sample(self, frame: Any, rng: np.random.Generator | None) -> Any:
        """One frame -> one sample; rng None = evaluation (no augmentation, every keyframe point first)."""
        raise NotImplementedError(f"recipe {self.name!r} has no per-frame samples")

    # -- steps ------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """Named, already weighted loss terms; the engine back-propagates their sum."""
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, batches: Iterable[Any]) -> dict[str, float]:
        """Metrics over this process's share of the validation set, reduced over all processes."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, batch: Any) -> torch.Tensor:
        """Class id per point of an evaluation batch, in sample order (segmentation recipes)."""
        raise NotImplementedError(f"recipe {self.name!r} does not predict point labels")

    def visualize(self, batch: Any) -> dict[str, np.ndarray]:
        """A few (H, W, 3) uint8 images for TensorBoard (optional)."""
        return {}


def freeze_teachers(recipe: Any) -> None:
    """Put the recipe's nets named in `frozen()` in eval mode with gradients off: what the trainer does after
    `build()` (and `xmkd summary` before counting). Any object with `nets` and `frozen()` will do."""
    for name in recipe.frozen():
        net = recipe.nets[name]
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)


def with_point_labels(frame: Any, rng: np.random.Generator | None, recipe: str, ignore_index: int) -> Any:
    """`frame` (an `xmkd.data.frame.Frame`) with point labels, for a recipe's `make_sample`: a training sample
    (`rng` given) of a frame without labels is an XmkdDataError naming the frame's file; for evaluation and
    prediction (a test split has no labels) every point gets `ignore_index`: predicted, nothing scored."""
    if frame.labels is not None:
        return frame
    if rng is not None:
        raise XmkdDataError(f"no point labels; {recipe} trains on labelled frames", source=frame.source)
    return replace(frame, labels=np.full(frame.num_points, ignore_index, np.int64))
