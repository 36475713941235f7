"""SphereFormer block (Lai et al., CVPR 2023) in plain PyTorch: pre-LN multi-head self-attention on voxel
tokens where half of the heads attend inside cubic windows and half inside radial windows — cells of
(azimuth, inclination, range) that are long along the range, so far, sparse points see neighbours along
their ray — then an MLP (ratio 4); residuals with drop-path.

Windows are formed by sorting tokens by window key (segment operations, no custom kernels): each window is
cut into chunks of at most `chunk` tokens, chunks are padded to one size and attended to in one batched
matmul with a padding mask. A learned relative-position bias (an MLP on the offset between two tokens,
cartesian for cubic heads, spherical for radial heads) is added to the attention logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if p == 0.0 or not training:
        return x
    keep = torch.rand(x.shape[0], 1, device=x.device) >= p
    return x * keep / (1 - p)


def spherical(xyz: torch.Tensor) -> torch.Tensor:
    """(M, 3) cartesian -> (azimuth, inclination, range)."""
    r = xyz.norm(dim=1).clamp(min=1e-6)
    return torch.stack([torch.atan2(xyz[:, 1], xyz[:, 0]), torch.asin((xyz[:, 2] / r).clamp(-1, 1)), r], 1)


def window_chunks(keys: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group tokens by window key (M, k) int: returns (slots (C, chunk) token index or -1, token order)."""
    _, window = torch.unique(keys, dim=0, return_inverse=True)
    order = torch.argsort(window, stable=True)
    w_sorted = window[order]
    starts = torch.ones_like(w_sorted, dtype=torch.bool)
    starts[1:] = w_sorted[1:] != w_sorted[:-1]
    start_idx = torch.nonzero(starts).squeeze(1)
    seg = torch.cumsum(starts.long(), 0) - 1
    rank = torch.arange(len(order), device=keys.device) - start_idx[seg]
    chunk_of = (rank // chunk)
    # chunk ids: consecutive over windows
    n_chunks_per_window = torch.zeros(len(start_idx), dtype=torch.long, device=keys.device)
    n_chunks_per_window.scatter_reduce_(0, seg, chunk_of + 1, reduce="amax", include_self=False)
    offsets = torch.cumsum(n_chunks_per_window, 0) - n_chunks_per_window
    cid = offsets[seg] + chunk_of
    slots = torch.full((int(n_chunks_per_window.sum()), chunk), -1, dtype=torch.long, device=keys.device)
    slots[cid, rank % chunk] = order
    return slots, order


class RelativeBias(nn.Module):
    def __init__(self, heads: int, hidden: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, heads))

    def forward(self, rel: torch.Tensor) -> torch.Tensor:
        """(C, K, K, 3) offsets -> (C, heads, K, K)."""
        return self.mlp(rel).permute(0, 3, 1, 2)


class DualWindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 4, cube: float = 1.0, radial: tuple[float, float, float] = (
            math.radians(2.0), math.radians(2.0), 20.0), chunk: int = 48):
        super().__init__()
        if heads % 2 or dim % heads:
            raise ValueError(f"need an even number of heads dividing dim, got heads={heads}, dim={dim}")
        self.heads, self.dim, self.chunk = heads, dim, chunk
        self.head_dim = dim // heads
        self.cube = cube
        self.radial = radial
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias = nn.ModuleList([RelativeBias(heads // 2), RelativeBias(heads // 2)])

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, keys: torch.Tensor,
                bias: RelativeBias, scale: torch.Tensor) -> torch.Tensor:
        slots, _ = window_chunks(keys, self.chunk)
        sizes = (slots >= 0).sum(1)
        result = torch.zeros_like(q)
        # Chunks are padded per size bucket (<= 4, 8, 16, ... tokens): padding wastes at most half of a bucket.
        lo = 0
        for hi in [b for b in (4, 8, 16, 32, 64, 128, 256) if b < self.chunk] + [self.chunk]:
            sel = (sizes > lo) & (sizes <= hi)
            lo = hi
            if not sel.any():
                continue
            width = int(sizes[sel].max())
            sl = slots[sel, :width]
            valid = sl >= 0
            idx = sl.clamp(min=0)
            qs, ks, vs = (t[idx].permute(0, 2, 1, 3) for t in (q, k, v))  # (C, h, K, d)
            p = pos[idx] / scale  # (C, K, 3)
            logits = qs @ ks.transpose(-1, -2) / math.sqrt(self.head_dim) + bias(p[:, :, None] - p[:, None, :])
            logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
            out = (torch.softmax(logits, -1) @ vs).permute(0, 2, 1, 3)  # (C, K, h, d)
            result[sl[valid]] = out[valid]
        return result

    def forward(self, x: torch.Tensor, xyz: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        m = x.shape[0]
        q, k, v = self.qkv(x).view(m, 3, self.heads, self.head_dim).unbind(1)
        half = self.heads // 2
        b = batch.long()[:, None]
        cube_keys = torch.cat([b, torch.floor(xyz / self.cube).long()], 1)
        sph = spherical(xyz)
        step = torch.tensor(self.radial, device=x.device, dtype=x.dtype)
        radial_keys = torch.cat([b, torch.floor(sph / step).long()], 1)
        out_cube = self._attend(q[:, :half], k[:, :half], v[:, :half], xyz, cube_keys, self.bias[0],
                                torch.full((3,), self.cube, device=x.device, dtype=x.dtype))
        sph_pos = torch.stack([sph[:, 0] * sph[:, 2], sph[:, 1] * sph[:, 2], sph[:, 2]], 1)  # arc lengths, range
        out_radial = self._attend(q[:, half:], k[:, half:], v[:, half:], sph_pos, radial_keys, self.bias[1],
                                  torch.tensor([1.0, 1.0, self.radial[2]], device=x.device, dtype=x.dtype))
        return self.proj(torch.cat([out_cube, out_radial], 1).reshape(m, self.dim))


class SphereFormerBlock(nn.Module):
    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 4.0, drop_path: float = 0.0, cube: float = 1.0,
                 radial: tuple[float, float, float] = (math.radians(2.0), math.radians(2.0), 20.0), chunk: int = 48):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = DualWindowAttention(dim, heads, cube, radial, chunk)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, xyz: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x), xyz, batch), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)

