"""The one module that imports spconv (sparse 3D convolution); everything else asks it for spconv.

CPU gotchas of spconv 2.3.x, handled or documented here:
- the backward pass asks `spconv.pytorch.ops.get_current_stream()` for a CUDA stream unconditionally, which
  fails on a CPU-only torch build. `spconv_module()` replaces that function with one that returns the
  default stream handle (0) when CUDA is unavailable — checked against `CHECKED_SPCONV_VERSION`;
- a sparse conv with `bias=True` fails in `eval()` on CPU ("cpu don't support act and bias"): models use
  bias-free convolutions followed by norm layers, as the field does;
- the CPU scatter-add that accumulates each kernel offset's products into the output features
  (`SpconvOps.scatter_add_cpu`) races when torch runs more than one thread: a few output rows lose a kernel
  offset's contribution, differently from run to run (measured: 13 of 16 runs of one 3x3x3 submanifold conv on a
  5 x 6 x 7 grid with 2 threads had wrong rows, errors up to 3.2). `spconv_module()` runs that one call on a single
  thread (it is memory-bound; the matrix products around it keep every thread);
- the CPU index generation keys a voxel by its linear index over batch x grid in 32 bits: past
  `CPU_MAX_CELLS` = 2**32 (e.g. batch 5+ on the 2048 x 2048 x 256 grid of +-51.2 m at 5 cm) samples of a batch alias
  and exchange features (measured: a submanifold conv of batch 5 differs from its samples alone by 0.32; batch 4,
  exactly 2**32 cells, is exact). `sparse_tensor` refuses such a batch on CPU.
"""

from __future__ import annotations

import functools
import math
import warnings
from types import ModuleType
from typing import Any

import torch

from xmkd.errors import XmkdConfigError

CHECKED_SPCONV_VERSION = "2.3.8"
CPU_MAX_CELLS = 2**32  # batch x grid cells that spconv's CPU index generation keeps apart (see above)


@functools.cache
def spconv_module() -> ModuleType:
    """`spconv.pytorch`, imported once, with the CPU stream shim (when CUDA is unavailable) and the single-threaded
    CPU scatter-add installed (see the module docstring)."""
    import spconv
    import spconv.pytorch as sp
    import spconv.pytorch.ops as sp_ops

    version = getattr(spconv, "__version__", "unknown")
    if version != CHECKED_SPCONV_VERSION:
        warnings.warn(f"spconv {version} is installed; xmkd's CPU shim was checked against "
                      f"{CHECKED_SPCONV_VERSION}", stacklevel=2)
    if not torch.cuda.is_available():
        sp_ops.get_current_stream = lambda: 0
    if not isinstance(sp_ops.SpconvOps, _SerialScatterOps):
        sp_ops.SpconvOps = _SerialScatterOps(sp_ops.SpconvOps)
    return sp


class _SerialScatterOps:
    """spconv's `SpconvOps` with `scatter_add_cpu` run on one torch thread (its multi-threaded form races)."""

    def __init__(self, ops: Any):
        self._ops = ops

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ops, name)

    def scatter_add_cpu(self, *args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        if threads == 1:
            return self._ops.scatter_add_cpu(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return self._ops.scatter_add_cpu(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)


def sparse_tensor(features: torch.Tensor, coords: torch.Tensor, spatial_shape: Any, batch_size: int) -> Any:
    """A `SparseConvTensor` from voxel features (M, C) and int coordinates (M, 4) = (batch, x, y, z)."""
    sp = spconv_module()
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be (M, 4) = (batch, x, y, z), got {tuple(coords.shape)}")
    shape = [int(s) for s in spatial_shape]
    cells = batch_size * math.prod(shape)
    if not features.is_cuda and cells > CPU_MAX_CELLS:
        raise XmkdConfigError(
            f"a sparse batch of {batch_size} x {shape} voxels = {cells} cells: spconv on CPU keys voxels "
            f"in 32 bits and mixes up the samples past {CPU_MAX_CELLS} cells; lower data.batch_size, shrink the "
            f"point range or enlarge the voxels (data.point_range / data.voxel_size, and target.point_range / "
            f"target.voxel_size for a target domain), or run on a GPU")
    return sp.SparseConvTensor(features, coords.int().contiguous(), shape, batch_size)


def lookup(query: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Row of `table` (M, 4) int coordinates equal to each `query` (P, 4) row, -1 where there is none.

    Coordinates are (batch, x, y, z) >= 0; rows are linearised into int64 keys and found by binary search.
    """
    if len(table) == 0:
        return torch.full((len(query),), -1, dtype=torch.long, device=query.device)
    q, t = query.long(), table.long()
    dims = (torch.maximum(q.max(0).values, t.max(0).values) + 1).tolist()

    def key(c: torch.Tensor) -> torch.Tensor:
        return ((c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]) * dims[3] + c[:, 3]

    tk = key(t)
    order = torch.argsort(tk)
    sorted_keys = tk[order]
    qk = key(q)
    pos = torch.searchsorted(sorted_keys, qk).clamp(max=len(sorted_keys) - 1)
    found = sorted_keys[pos] == qk
    return torch.where(found, order[pos], torch.full_like(pos, -1))
