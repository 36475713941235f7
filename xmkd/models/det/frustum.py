"""CaDDN / CMKD's camera -> BEV lifting: linear-increasing depth bins (LID), frustum features and their trilinear
sampling onto the LiDAR teacher's voxel grid, so the student's BEV map lives on exactly the teacher's cells."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def lid_bin_size(depth_min: float, depth_max: float, num_bins: int) -> float:
    return 2 * (depth_max - depth_min) / (num_bins * (1 + num_bins))


def depth_to_lid(depth: torch.Tensor, depth_min: float, depth_max: float, num_bins: int) -> torch.Tensor:
    """Continuous LID bin coordinate of a depth: bin i spans [d(i), d(i + 1)) with d(i) = d_min + size * i (i + 1) / 2,
    so bins grow linearly with depth; 0 at d_min, num_bins at d_max."""
    size = lid_bin_size(depth_min, depth_max, num_bins)
    return -0.5 + 0.5 * torch.sqrt(1 + 8 * (depth - depth_min) / size)


def lid_to_depth(index: torch.Tensor, depth_min: float, depth_max: float, num_bins: int) -> torch.Tensor:
    size = lid_bin_size(depth_min, depth_max, num_bins)
    return depth_min + size * ((2 * index + 1) ** 2 - 1) / 8


def depth_bin_targets(depth: torch.Tensor, depth_min: float, depth_max: float, num_bins: int) -> torch.Tensor:
    """Integer bin of each depth; depths outside [d_min, d_max) or invalid (<= 0) go to the extra bin `num_bins`."""
    index = torch.floor(depth_to_lid(depth.clamp(min=depth_min), depth_min, depth_max, num_bins)).long()
    bad = (depth < depth_min) | (depth >= depth_max) | ~torch.isfinite(depth)
    return torch.where(bad, torch.full_like(index, num_bins), index)


def frustum_features(image_features: torch.Tensor, depth_logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) features and (B, D + 1, H, W) depth logits -> (B, C, D, H, W) = softmax(depth) x features,
    without the out-of-range bin."""
    probs = depth_logits.softmax(1)[:, :-1]
    return image_features[:, :, None] * probs[:, None]


def voxel_centres(point_range: Sequence[float], grid: tuple[int, int, int], device: torch.device | str = "cpu"
                  ) -> torch.Tensor:
    """(nz, ny, nx, 3) centres (x, y, z) of a voxel grid of `grid` = (nz, ny, nx) cells over the range."""
    nz, ny, nx = grid
    x0, y0, z0, x1, y1, z1 = (float(v) for v in point_range)
    axes = [lo + (torch.arange(n, dtype=torch.float32, device=device) + 0.5) * (hi - lo) / n
            for lo, hi, n in ((z0, z1, nz), (y0, y1, ny), (x0, x1, nx))]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def frustum_to_voxels(frustum: torch.Tensor, centres: torch.Tensor, lidar_to_image: torch.Tensor, stride: float,
                      depth_min: float, depth_max: float) -> torch.Tensor:
    """Sample frustum features (B, C, D, Hf, Wf) at every voxel centre (nz, ny, nx, 3) -> (B, C, nz, ny, nx).

    `lidar_to_image` (B, 3, 4) = K [R | t] maps LiDAR points to homogeneous pixels; feature cell (i, j) of the
    frustum sits at image pixel (stride * j, stride * i). Voxels behind the camera, outside the image or beyond
    the depth range get zeros."""
    b, c, d, hf, wf = frustum.shape
    pts = centres.reshape(-1, 3)
    homo = torch.cat([pts, torch.ones_like(pts[:, :1])], 1)  # (V, 4)
    uvw = torch.einsum("bij,vj->bvi", lidar_to_image, homo)  # (B, V, 3)
    depth = uvw[..., 2]
    front = depth > 1e-3
    u = uvw[..., 0] / depth.clamp(min=1e-3) / stride
    v = uvw[..., 1] / depth.clamp(min=1e-3) / stride
    k = depth_to_lid(depth.clamp(min=depth_min), depth_min, depth_max, d)
    # grid_sample with align_corners=True: -1 and 1 are the centres of the first and last cells
    grid = torch.stack([u / max(wf - 1, 1) * 2 - 1, v / max(hf - 1, 1) * 2 - 1, k / max(d - 1, 1) * 2 - 1], -1)
    grid = torch.where((front & (depth >= depth_min))[..., None], grid, torch.full_like(grid, -2.0))  # -> zeros
    out = F.grid_sample(frustum, grid.view(b, 1, 1, -1, 3), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(b, c, *centres.shape[:3])
