"""Frames -> batches: voxelization with the point -> voxel map, concatenated per-point arrays.

Every array is concatenated once and wrapped with `torch.from_numpy` (no second copy). Voxel coordinates
are (batch, x, y, z) at stride 1 on a fixed grid over `point_range`; points outside the range are dropped
by the sample builder before collation (lidar_seg training) or clipped onto the boundary voxels (evaluation, so
that every point of a scan is scored; xmuda / ftd / bftd also in training, as their releases keep every
front-camera point), so every point has a voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from xmkd.geometry.voxel import voxelize

VOXEL_FEATURES = ("first", "mean")  # `voxel_batch(voxel_feature=...)`


def in_range(xyz: np.ndarray, point_range: Sequence[float]) -> np.ndarray:
    lo, hi = np.asarray(point_range[:3]), np.asarray(point_range[3:])
    return np.all((xyz >= lo) & (xyz < hi), axis=1)


def clip_to_range(xyz: np.ndarray, point_range: Sequence[float], voxel_size: float) -> np.ndarray:
    """Points moved onto the range's boundary voxels, so that evaluation can score every point of a scan."""
    lo, hi = np.asarray(point_range[:3], np.float64), np.asarray(point_range[3:], np.float64)
    # half a voxel inside on both sides, so float32 rounding cannot push a point back out
    return np.clip(xyz, lo + voxel_size / 2, hi - voxel_size / 2).astype(np.float32)


def voxel_batch(points_xyz: list[np.ndarray], point_features: list[np.ndarray], voxel_size: float | Sequence[float],
                point_range: Sequence[float], multiple: int = 16, offsets: Sequence[np.ndarray] | None = None,
                voxel_feature: str = "mean") -> dict[str, torch.Tensor | int]:
    """Per sample: xyz (N_i, 3) inside the range and features (N_i, C) -> the sparse-network batch dict.

    `voxel_feature`: a voxel's input feature and position (`voxel_xyz`) are the mean of its points' ("mean") or
    those of its first point ("first": the point torchsparse's `sparse_quantize(return_index=True)` keeps, whose
    feature U2MKD's release feeds the network, lc_semantic_nusc_tsd_full.py:211-222). Raises ValueError for
    another value.

    The grid's spatial shape is rounded up to a `multiple` of the network's total stride, so that every
    stride-2 convolution halves it exactly and no voxel falls off the grid's far edge. `offsets` (per sample, (3,)
    ints in 0 .. multiple - 1): the sample's voxels shifted by that many voxels, on a grid one `multiple` larger
    per axis (a random translation as a strided sparse network sees it)."""
    if voxel_feature not in VOXEL_FEATURES:
        raise ValueError(f"voxel_feature {voxel_feature!r} is not one of {', '.join(VOXEL_FEATURES)}")
    coords, feats, vxyz, pv, pbatch = [], [], [], [], []
    offset = 0
    grid = None
    for b, (xyz, f) in enumerate(zip(points_xyz, point_features)):
        v = voxelize(xyz, voxel_size, point_range)
        if (v.inverse < 0).any():
            raise ValueError("points outside point_range reached the collate function")
        grid = v.grid_shape
        shift = 0 if offsets is None else np.asarray(offsets[b], np.int64)
        if offsets is not None and ((shift < 0) | (shift >= multiple)).any():
            raise ValueError(f"voxel offset {shift} outside 0 .. {multiple - 1}")
        coords.append(np.column_stack([np.full(v.num_voxels, b), v.coords + shift]))
        if voxel_feature == "first":
            feats.append(np.asarray(f[v.first_index], np.float32))
            vxyz.append(xyz[v.first_index])
        else:  # the mean of its points
            sums = np.zeros((v.num_voxels, f.shape[1]), np.float64)
            for c in range(f.shape[1]):
                sums[:, c] = np.bincount(v.inverse, weights=f[:, c], minlength=v.num_voxels)
            feats.append((sums / v.counts[:, None]).astype(np.float32))
            vxyz.append(np.column_stack([np.bincount(v.inverse, weights=xyz[:, c], minlength=v.num_voxels)
                                         for c in range(3)]) / v.counts[:, None])
        pv.append(v.inverse + offset)
        pbatch.append(np.full(len(xyz), b))
        offset += v.num_voxels
    origin = np.asarray(point_range[:3], np.float32)
    shape = -(-np.asarray(grid) // multiple) * multiple + (0 if offsets is None else multiple)
    return {
        "voxel_coords": torch.from_numpy(np.concatenate(coords).astype(np.int32)),
        "voxel_features": torch.from_numpy(np.concatenate(feats)),
        "voxel_xyz": torch.from_numpy(np.concatenate(vxyz).astype(np.float32)),  # its points' mean / first (m)
        "point_voxel": torch.from_numpy(np.concatenate(pv).astype(np.int64)),
        "point_batch": torch.from_numpy(np.concatenate(pbatch).astype(np.int64)),
        "spatial_shape": torch.as_tensor(shape, dtype=torch.int64),
        "batch_size": len(points_xyz),
        "origin": torch.from_numpy(origin),
        "voxel_size": torch.tensor(voxel_size, dtype=torch.float32),  # scalar, or (3,) per axis
    }
