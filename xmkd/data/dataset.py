"""Torch datasets over prepared frames: `FrameSamples` turns each `Frame` into a recipe's training sample."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from xmkd.data.frame import Frame
from xmkd.data.index import IndexedFrames


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of every random choice of sample `index` in `epoch`: the same whichever data worker loads it,
    and the same in a resumed run (the engine's sampler yields `(epoch, index)` pairs)."""
    return np.random.default_rng([seed, epoch, index])


class FrameSamples(Dataset):
    """`dataset[(epoch, i)]` = `make_sample(frame_i, rng)` with rng = sample_rng(seed, epoch, i) when `train`,
    else None (no augmentation). Indexing by an int means epoch 0."""

    def __init__(self, frames: IndexedFrames, make_sample: Callable[[Frame, np.random.Generator | None], Any],
                 seed: int, train: bool):
        self.frames, self.make_sample, self.seed, self.train = frames, make_sample, seed, train

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = sample_rng(self.seed, epoch, index) if self.train else None
        return self.make_sample(self.frames[index], rng)


class ConcatSamples(Dataset):
    """Several sample datasets end to end under one `(epoch, i)` index (e.g. labelled frames, then unlabelled ones)."""

    def __init__(self, parts: list[Dataset]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part][(epoch, index - int(self.offsets[part]))]
