"""Data loading for the engine: a resumable, shardable sampler and the DataLoader around a recipe's dataset.

The sampler yields `(epoch, index)` pairs, so a dataset derives every random choice of a sample from
`xmkd.data.dataset.sample_rng(seed, epoch, index)`: augmentations do not depend on which worker loads the sample, and a
resumed run sees exactly the samples (and augmentations) an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ResumableSampler(Sampler):
    """Epoch permutations from (seed, epoch); rank r of w takes every w-th index (like DistributedSampler), so
    w processes with batch b see the same global batches as one process with batch w*b.

    It streams epoch after epoch from a position (`set_position(epoch, start, limit)`: skip the `start`
    samples already consumed in that epoch, stop after `limit` samples), so one DataLoader and its workers
    live for the whole run. Each epoch contributes a whole number of batches (the tail is dropped)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1,
                 batch_size: int = 1):
        self.size, self.seed, self.shuffle, self.rank, self.world = size, seed, shuffle, rank, world
        self.batch_size = batch_size
        self.epoch, self.start, self.limit = 0, 0, None

    def set_position(self, epoch: int, start: int = 0, limit: int | None = None) -> None:
        self.epoch, self.start, self.limit = epoch, start, limit

    def per_rank(self) -> int:
        return self.size // self.world

    def per_epoch(self) -> int:
        """Samples this rank takes per epoch: whole batches only."""
        return self.per_rank() // self.batch_size * self.batch_size

    def epoch_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        return order[: self.per_rank() * self.world][self.rank :: self.world][: self.per_epoch()]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start, left = self.epoch, self.start, self.limit
        while left is None or left > 0:
            indices = self.epoch_indices(epoch)[start:]
            if left is not None:
                indices = indices[:left]
                left -= len(indices)
            for index in indices:
                yield epoch, index
            if self.limit is None or not self.per_epoch():
                return  # without a limit: one epoch
            epoch, start = epoch + 1, 0

    def __len__(self) -> int:
        return self.limit if self.limit is not None else max(0, self.per_epoch() - self.start)


class EvalSampler(Sampler):
    """Every index exactly once over all ranks (rank r takes r, r + w, ...), in order, epoch 0."""

    def __init__(self, size: int, rank: int = 0, world: int = 1):
        self.indices = list(range(rank, size, world))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((0, i) for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(dataset: Dataset, sampler: Sampler, batch_size: int, collate: Callable[[list[Any]], Any],
                num_workers: int, pin_memory: bool, drop_last: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=drop_last, persistent_workers=False,
                      prefetch_factor=4 if num_workers > 0 else None)


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch to `device`; other values unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
