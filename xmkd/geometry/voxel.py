"""Voxelization: points -> unique voxels, with the point -> voxel inverse map.

Voxel coordinates are integer (ix, iy, iz) = floor((p - origin) / voxel_size). With a `point_range`
(xmin, ymin, zmin, xmax, ymax, zmax) the origin is the range's minimum, points outside [min, max) are
dropped and the grid shape is fixed; without one, the origin is the smallest voxel corner that holds a
point. Voxels come out sorted by their linear key (x slowest, z fastest), so the result is deterministic.
Everything works on numpy arrays and on torch tensors (on any device).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Voxels:
    """Result of `voxelize` for N input points and M occupied voxels."""

    coords: Any  # (M, 3) int64 voxel indices (ix, iy, iz)
    inverse: Any  # (N,) int64 voxel index of each point, -1 for points outside the range
    counts: Any  # (M,) int64 points per voxel
    first_index: Any  # (M,) int64 index (into the N points) of the first point of each voxel
    origin: np.ndarray  # (3,) float64 world position of voxel (0, 0, 0)'s minimum corner
    voxel_size: np.ndarray  # (3,) float64
    grid_shape: np.ndarray  # (3,) int64: the fixed grid with a range, the occupied extent without

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])

    @property
    def point_mask(self) -> Any:
        """(N,) bool: points that fell inside the range (all True without a range)."""
        return self.inverse >= 0

    def centers(self) -> Any:
        """(M, 3) float world positions of the voxel centres."""
        size, origin = self.voxel_size, self.origin
        if not isinstance(self.coords, np.ndarray):
            import torch

            size = torch.as_tensor(size, dtype=torch.float32, device=self.coords.device)
            origin = torch.as_tensor(origin, dtype=torch.float32, device=self.coords.device)
        return (self.coords + 0.5) * size + origin


def voxelize(
    points: Any, voxel_size: float | Sequence[float], point_range: Sequence[float] | None = None
) -> Voxels:
    """Group points (N, 3+) into voxels of `voxel_size` (a scalar or per-axis (3,) in metres)."""
    size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,)).copy()
    if np.any(size <= 0):
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    is_np = isinstance(points, np.ndarray)
    xyz = points[:, :3]
    n = xyz.shape[0]
    if point_range is not None:
        rng = np.asarray(point_range, dtype=np.float64)
        if rng.shape != (6,) or np.any(rng[3:] <= rng[:3]):
            raise ValueError(f"point_range must be (xmin, ymin, zmin, xmax, ymax, zmax), got {point_range}")
        origin = rng[:3]
        grid = np.round((rng[3:] - rng[:3]) / size).astype(np.int64)
    if is_np:
        xyz64 = xyz.astype(np.float64)
        if point_range is None:
            origin = (np.floor(xyz64.min(0) / size) * size) if n else np.zeros(3)
        coords = np.floor((xyz64 - origin) / size).astype(np.int64)
        if point_range is None:
            grid = (coords.max(0) + 1) if n else np.zeros(3, np.int64)
            inside = np.ones(n, dtype=bool)
        else:
            inside = np.all((coords >= 0) & (coords < grid), axis=1)
        keys = (coords[:, 0] * grid[1] + coords[:, 1]) * grid[2] + coords[:, 2]
        kept = np.nonzero(inside)[0]
        uniq, first_pos, inv, counts = np.unique(
            keys[kept], return_index=True, return_inverse=True, return_counts=True
        )
        inverse = np.full(n, -1, dtype=np.int64)
        inverse[kept] = inv.reshape(-1)
        first_index = kept[first_pos]
        vcoords = np.stack([uniq // (grid[1] * grid[2]), (uniq // grid[2]) % grid[1], uniq % grid[2]], 1)
        return Voxels(vcoords.astype(np.int64), inverse, counts.astype(np.int64), first_index.astype(np.int64),
                      origin, size, grid)

    import torch

    dev = xyz.device
    xyz64 = xyz.double()
    if point_range is None:
        origin = (np.floor(xyz64.min(0).values.cpu().numpy() / size) * size) if n else np.zeros(3)
    coords = torch.floor((xyz64 - torch.as_tensor(origin, device=dev)) / torch.as_tensor(size, device=dev)).long()
    if point_range is None:
        grid = (coords.max(0).values.cpu().numpy() + 1) if n else np.zeros(3, np.int64)
        inside = torch.ones(n, dtype=torch.bool, device=dev)
    else:
        g = torch.as_tensor(grid, device=dev)
        inside = torch.all((coords >= 0) & (coords < g), dim=1)
    keys = (coords[:, 0] * int(grid[1]) + coords[:, 1]) * int(grid[2]) + coords[:, 2]
    kept = torch.nonzero(inside).squeeze(1)
    uniq, inv, counts = torch.unique(keys[kept], sorted=True, return_inverse=True, return_counts=True)
    inverse = torch.full((n,), -1, dtype=torch.long, device=dev)
    inverse[kept] = inv
    first_index = torch.full((uniq.shape[0],), n, dtype=torch.long, device=dev)
    first_index.scatter_reduce_(0, inv, kept, reduce="amin")
    gy, gz = int(grid[1]), int(grid[2])
    vcoords = torch.stack([uniq // (gy * gz), (uniq // gz) % gy, uniq % gz], 1)
    return Voxels(vcoords, inverse, counts, first_index, origin, size, np.asarray(grid, np.int64))


def voxel_mean(features: Any, voxels: Voxels) -> Any:
    """Per-voxel mean of point features (N, C) -> (M, C) (points outside the range are ignored)."""
    mask = voxels.inverse >= 0
    inv = voxels.inverse[mask]
    feats = features[mask]
    if isinstance(features, np.ndarray):
        m = voxels.num_voxels
        out = np.stack([np.bincount(inv, weights=feats[:, c], minlength=m) for c in range(feats.shape[1])], 1)
        return (out / voxels.counts[:, None]).astype(features.dtype)
    import torch

    out = torch.zeros((voxels.num_voxels, feats.shape[1]), dtype=feats.dtype, device=feats.device)
    out.index_add_(0, inv, feats)
    return out / voxels.counts[:, None].to(feats.dtype)


def voxel_first(features: Any, voxels: Voxels) -> Any:
    """Features (N, C) of the first point (lowest index) of each voxel -> (M, C)."""
    return features[voxels.first_index]
