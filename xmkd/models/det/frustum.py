"""CaDDN / CMKD's camera -> BEV lifting: linear-increasing depth bins (LID), frustum features and their trilinear
sampling onto the LiDAR teacher's voxel grid, so the student's BEV map lives on exactly the teacher's cells."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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


SAMPLINGS = ("centres", "caddn")


def frustum_to_voxels(frustum: torch.Tensor, centres: torch.Tensor, lidar_to_image: torch.Tensor, stride: float,
                      depth_min: float, depth_max: float, sampling: str = "centres",
                      image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Sample frustum features (B, C, D, Hf, Wf) at every voxel centre (nz, ny, nx, 3) -> (B, C, nz, ny, nx).

    `lidar_to_image` (B, 3, 4) = K [R | t] maps LiDAR points to homogeneous pixels (u, v) of an image whose
    feature cell (i, j) covers pixels [stride * j, stride * (j + 1)) x [stride * i, stride * (i + 1)).
    `sampling`:
    - "centres" (xmkd's default, a fix): a point is read at its continuous cell coordinate u / stride - 1/2 (and
      v, and LID bin k - 1/2), so a point at a cell's centre pixel and a depth bin's centre reads exactly the
      frustum entry (bin, row, column) that `depth_bin_targets` and the per-cell depth targets give it;
    - "caddn" (the releases, `f2v/frustum_grid_generator.py:133-139` with `transform_utils.normalize_coords` and
      `grid_sample(align_corners=False)`): u / (W_image - 1), v / (H_image - 1) and k / (D - 1) normalised to
      [-1, 1], which reads about half a pixel off in u and v and (k + 1/2) / D bins deeper than the centres.
      `image_size` (W, H) is then required.
    Voxels behind the camera, outside the image or nearer than `depth_min` get zeros."""
    b, c, d, hf, wf = frustum.shape
    pts = centres.reshape(-1, 3)
    homo = torch.cat([pts, torch.ones_like(pts[:, :1])], 1)  # (V, 4)
    uvw = torch.einsum("bij,vj->bvi", lidar_to_image, homo)  # (B, V, 3)
    depth = uvw[..., 2]
    front = depth > 1e-3
    u = uvw[..., 0] / depth.clamp(min=1e-3)
    v = uvw[..., 1] / depth.clamp(min=1e-3)
    k = depth_to_lid(depth.clamp(min=depth_min), depth_min, depth_max, d)
    if sampling == "centres":
        # align_corners=True: -1 and 1 are the centres of the first and last cells / bins
        grid = torch.stack([(u / stride - 0.5) / max(wf - 1, 1), (v / stride - 0.5) / max(hf - 1, 1),
                            (k - 0.5) / max(d - 1, 1)], -1) * 2 - 1
    elif sampling == "caddn":
        if image_size is None:
            raise ValueError("frustum_to_voxels: sampling 'caddn' normalises by the image size; pass image_size")
        grid = torch.stack([u / (image_size[0] - 1), v / (image_size[1] - 1), k / (d - 1)], -1) * 2 - 1
    else:
        raise ValueError(f"frustum_to_voxels: sampling must be one of {SAMPLINGS}, got {sampling!r}")
    grid = torch.where((front & (depth >= depth_min))[..., None], grid, torch.full_like(grid, -2.0))  # -> zeros
    out = F.grid_sample(frustum, grid.view(b, 1, 1, -1, 3), mode="bilinear", padding_mode="zeros",
                        align_corners=sampling == "centres")
    return out.view(b, c, *centres.shape[:3])


def cell_depths(uv: np.ndarray, depth: np.ndarray, image_size: tuple[int, int], stride: int, reduce: str = "mean"
                ) -> np.ndarray:
    """Per feature cell, the depth target of projected LiDAR points: uv (N, 2) pixels and depth (N,) metres of the
    points visible in an image of `image_size` (W, H) -> (ceil(H / stride), ceil(W / stride)) metres, 0 where a
    cell holds no point.

    - "mean" (the releases: a sparse depth image, each pixel its nearest point, then `sparse_avg_pooling` over
      stride x stride blocks, `datasets/processor/data_processor_cmkd.py:252-265,304-308`): the mean over the
      cell's non-empty pixels;
    - "nearest": the nearest point of the cell."""
    w, h = image_size
    fh, fw = -(-h // stride), -(-w // stride)
    if reduce == "nearest":
        cols, rows = uv[:, 0].astype(np.int64).clip(0, w - 1), uv[:, 1].astype(np.int64).clip(0, h - 1)
        out = np.full((fh, fw), np.inf, np.float32)
        np.minimum.at(out, (rows // stride, cols // stride), depth.astype(np.float32))
        return np.where(np.isfinite(out), out, 0).astype(np.float32)
    if reduce != "mean":
        raise ValueError(f"cell_depths: reduce must be mean or nearest, got {reduce!r}")
    r, c, z = depth_image_pixels(uv, depth, image_size)
    total, count = np.zeros((fh, fw), np.float64), np.zeros((fh, fw), np.float64)
    np.add.at(total, (r // stride, c // stride), z)
    np.add.at(count, (r // stride, c // stride), 1)
    return np.where(count > 0, total / np.maximum(count, 1), 0).astype(np.float32)


def depth_image_pixels(uv: np.ndarray, depth: np.ndarray, image_size: tuple[int, int]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sparse depth image of projected points (each pixel its nearest point, as the releases' depth maps):
    uv (N, 2) pixels, depth (N,) metres, image_size (W, H) -> rows (M,), cols (M,), metres (M,) of its non-empty
    pixels."""
    w, h = image_size
    cols, rows = uv[:, 0].astype(np.int64).clip(0, w - 1), uv[:, 1].astype(np.int64).clip(0, h - 1)
    image = np.full((h, w), np.inf, np.float32)
    np.minimum.at(image, (rows, cols), depth.astype(np.float32))
    r, c = np.nonzero(np.isfinite(image))
    return r, c, image[r, c]


def cell_depth_histograms(uv: np.ndarray, depth: np.ndarray, image_size: tuple[int, int], stride: int,
                          depth_min: float, depth_max: float, num_bins: int) -> np.ndarray:
    """Per feature cell, the share of its depth-image pixels (`depth_image_pixels`) in each LID bin
    (`depth_bin_targets`): -> (num_bins + 1, ceil(H / stride), ceil(W / stride)), each non-empty cell summing to 1
    (pixels outside [depth_min, depth_max) in the last bin), all zeros where a cell holds no pixel.

    The lifting weights of the histogram oracle (`MonoConfig.oracle_bins: histogram`, not in the releases): where a
    cell covers a car's edge and the road behind it, the one-hot bin of its mean depth puts all its features
    between the two, the histogram puts each surface's share at its own depth."""
    w, h = image_size
    fh, fw = -(-h // stride), -(-w // stride)
    r, c, z = depth_image_pixels(uv, depth, image_size)
    bins = depth_bin_targets(torch.from_numpy(z), depth_min, depth_max, num_bins).numpy()
    counts = np.zeros((num_bins + 1, fh, fw), np.float64)
    np.add.at(counts, (bins, r // stride, c // stride), 1)
    total = counts.sum(0, keepdims=True)
    return (counts / np.maximum(total, 1)).astype(np.float32)
