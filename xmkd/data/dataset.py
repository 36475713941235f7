"""Torch datasets over prepared frames: `FrameSamples` turns each `Frame` into a recipe's training sample."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from xmkd.data.frame import Frame
from xmkd.data.index import IndexedFrames
from xmkd.errors import XmkdDataError

MAX_DRAWS = 100  # redraws of one sample before a training set whose samples all fail `redraw` is an error


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of every random choice of sample `index` in `epoch`: the same whichever data worker loads it,
    and the same in a resumed run (the engine's sampler yields `(epoch, index)` pairs)."""
    return np.random.default_rng([seed, epoch, index])


def redrawn(sample: Any, redraw: Callable[[Any], bool] | None, build: Callable[[int, np.random.Generator], Any],
            size: int, seed: int, epoch: int, index: int) -> Any:
    """`sample` (sample `index` of `epoch`), or, while `redraw(sample)` holds, a random other sample of the `size`
    in the set built by `build(j, rng)` with fresh augmentation: OpenPCDet's training `prepare_data` replaces a scene
    left without boxes by `__getitem__(np.random.randint(len(self)))` [OpenPCDet / CMKD: pcdet/datasets/dataset.py
    DatasetTemplate.prepare_data; kitti_dataset_cmkd.py prepare_data]. The choice and the augmentation come from
    rng = default_rng([seed, epoch, index, draw]), so a run's seed fixes them too. XmkdDataError after MAX_DRAWS
    draws that all fail (the release recurses until Python's recursion limit)."""
    if redraw is None:
        return sample
    for draw in range(1, MAX_DRAWS + 1):
        if not redraw(sample):
            return sample
        rng = np.random.default_rng([seed, epoch, index, draw])
        sample = build(int(rng.integers(size)), rng)
    if not redraw(sample):
        return sample
    raise XmkdDataError(f"training sample {index} (epoch {epoch}) and {MAX_DRAWS} random others drawn for it all "
                        "were left without boxes (no labelled box of the model's classes inside data.point_range); "
                        "check the classes and the point range, or set model.redraw_empty=false to train such "
                        "scenes as empty")


class FrameSamples(Dataset):
    """`dataset[(epoch, i)]` = `make_sample(frame_i, rng)` with rng = sample_rng(seed, epoch, i) when `train`,
    else None (no augmentation). Indexing by an int means epoch 0. `redraw` (training only): a sample for which it
    holds is replaced by a random other one (`redrawn`)."""

    def __init__(self, frames: IndexedFrames, make_sample: Callable[[Frame, np.random.Generator | None], Any],
                 seed: int, train: bool, redraw: Callable[[Any], bool] | None = None):
        self.frames, self.make_sample, self.seed, self.train = frames, make_sample, seed, train
        self.redraw = redraw if train else None

    def __len__(self) -> int:
        return len(self.frames)

    def build(self, index: int, rng: np.random.Generator | None) -> Any:
        """The sample of frame `index` with the augmentation drawn from `rng`."""
        return self.make_sample(self.frames[index], rng)

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        sample = self.build(index, sample_rng(self.seed, epoch, index) if self.train else None)
        return redrawn(sample, self.redraw, self.build, len(self), self.seed, epoch, index)


class ConcatSamples(Dataset):
    """Several sample datasets end to end under one `(epoch, i)` index (e.g. labelled frames, then unlabelled ones).
    `redraw` (with `seed`): a sample for which it holds is replaced by a random one of the whole set (`redrawn`;
    the parts must then be FrameSamples, and should not redraw themselves)."""

    def __init__(self, parts: list[Dataset], redraw: Callable[[Any], bool] | None = None, seed: int = 0):
        self.parts, self.redraw, self.seed = parts, redraw, seed
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _part(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return part, index - int(self.offsets[part])

    def build(self, index: int, rng: np.random.Generator) -> Any:
        part, i = self._part(index)
        return self.parts[part].build(i, rng)

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        part, i = self._part(index)
        return redrawn(self.parts[part][(epoch, i)], self.redraw, self.build, len(self), self.seed, epoch, index)
