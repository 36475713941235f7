"""The one module that imports spconv (sparse 3D convolution); everything else asks it for spconv.

CPU gotchas of spconv 2.3.x, both handled or documented here:
- the backward pass asks `spconv.pytorch.ops.get_current_stream()` for a CUDA stream unconditionally, which
  fails on a CPU-only torch build. `spconv_module()` replaces that function with one that returns the
  default stream handle (0) when CUDA is unavailable — checked against `CHECKED_SPCONV_VERSION`;
- a sparse conv with `bias=True` fails in `eval()` on CPU ("cpu don't support act and bias"): models use
  bias-free convolutions followed by norm layers, as the field does.
"""

from __future__ import annotations

import functools
import warnings
from types import ModuleType
from typing import Any

import torch

CHECKED_SPCONV_VERSION = "2.3.8"


@functools.cache
def spconv_module() -> ModuleType:
    """`spconv.pytorch`, imported once, with the CPU stream shim installed when CUDA is unavailable."""
    import spconv
    import spconv.pytorch as sp
    import spconv.pytorch.ops as sp_ops

    version = getattr(spconv, "__version__", "unknown")
    if version != CHECKED_SPCONV_VERSION:
        warnings.warn(f"spconv {version} is installed; xmkd's CPU shim was checked against "
                      f"{CHECKED_SPCONV_VERSION}", stacklevel=2)
    if not torch.cuda.is_available():
        sp_ops.get_current_stream = lambda: 0
    return sp


def sparse_tensor(features: torch.Tensor, coords: torch.Tensor, spatial_shape: Any, batch_size: int) -> Any:
    """A `SparseConvTensor` from voxel features (M, C) and int coordinates (M, 4) = (batch, x, y, z)."""
    sp = spconv_module()
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be (M, 4) = (batch, x, y, z), got {tuple(coords.shape)}")
    return sp.SparseConvTensor(features, coords.int().contiguous(), [int(s) for s in spatial_shape], batch_size)
