"""SphereFormer block (Lai et al., CVPR 2023) as U2MKD releases it, in plain PyTorch (no sptr CUDA kernels).

Release: `core/models/sphereformer/spherical_transformer.py` (`SphereFormer`, `SparseMultiheadSASphereConcat`,
`exponential_split`) and `third_party/SparseTransformer/sptr/{modules,utils}.py` (`sparse_self_attention`,
`get_indices_params`) of github:isunLt/U2MKD @ d8dfa69.

- pre-LN block: x + DropPath(proj(attn(LN(x)))), then x + DropPath(MLP(LN(x))) (ratio 4, GELU);
- `heads` heads of `dim / heads` channels; the first `heads // 2` attend inside **cubic windows** of edge
  `cube` metres, the others inside **radial windows** of (`radial[0]` deg azimuth, `radial[1]` deg
  inclination, `radial[2]` m range) in spherical coordinates; windows are cells counted from the minimum
  over all tokens, separate per sample (torch_geometric's `voxel_grid` with start = min, as sptr);
- **contextual relative position encoding** on query, key and value (Stratified Transformer): with the
  position inside the window quantised in `QUANT_STEPS` = 24 steps per window edge, the relative index r_ij
  per axis selects learned tables, logit_ij = q_i . (k_j + sum_a Tq[r_ij,a]) + k_j . sum_a Tk[r_ij,a] (q
  scaled by head_dim^-1/2), out_i = sum_j a_ij (v_j + sum_a Tv[r_ij,a]); on the radial heads the range axis
  uses the release's exponential split of the range difference (a = `rpe_a` metres) instead;
- attention over **every token of the window**, as the release.

Implementation: tokens are sorted by window and the windows grouped by size into padded buckets of
width 4, 8, 16, ...; each bucket is one batched matmul with a padding mask, cut into slabs of at most `SLAB`
(pair, axis, head) entries, so memory grows with pairs x heads, not pairs x channels. The RPE terms gather each
token's products with every table row (M x 3 x 2L per head), and the value term adds the attention mass per
table row (the same size) times the value table.
"""

from __future__ import annotations

import math

import torch
from torch import nn

QUANT_STEPS = 24  # `quant_size_scale` of the released configs: window edge / RPE quantum
SLAB = 1 << 22  # pair-axis-head entries per batched step (bounds the memory of large windows)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """timm's DropPath on (N, C) tokens: each row dropped with probability p, the rest scaled by 1 / (1 - p)."""
    if p == 0.0 or not training:
        return x
    keep = torch.rand(x.shape[0], 1, device=x.device) >= p
    return x * keep / (1 - p)


def cart2sphere(xyz: torch.Tensor) -> torch.Tensor:
    """(M, 3) cartesian metres -> (azimuth in [0, 360] deg, angle from +z in [0, 180] deg, range m), as the
    release's `cart2sphere`."""
    x, y, z = xyz.unbind(1)
    theta = torch.rad2deg(torch.atan2(y, x) + math.pi)
    beta = torch.rad2deg(torch.atan2(torch.sqrt(x * x + y * y), z))
    return torch.stack([theta, beta, xyz.norm(dim=1)], 1)


def window_index(pos: torch.Tensor, batch: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Dense window id (M,) of each token: cells of `size` (3,) counted from the minimum over all tokens, one
    set per sample (`batch` (M,))."""
    cell = torch.floor((pos - pos.min(0).values) / size).long()
    dims = cell.max(0).values + 1
    key = ((batch.long() * dims[0] + cell[:, 0]) * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
    return torch.unique(key, return_inverse=True)[1]


def window_groups(window: torch.Tensor) -> list[torch.Tensor]:
    """Tokens grouped for attention: a list of (R, K) token-index matrices (-1 = padding), one row per window,
    rows bucketed by size (<= 4, 8, 16, ...) so that padding wastes at most half of a row. Every token is in
    exactly one row."""
    order = torch.argsort(window, stable=True)
    w = window[order]
    counts = torch.bincount(w)
    col = torch.arange(window.numel(), device=window.device) - (torch.cumsum(counts, 0) - counts)[w]
    size = counts[w]
    bucket = torch.ceil(torch.log2(size.clamp(min=4).double())).long()  # row width class: 2^bucket
    groups = []
    for b in torch.unique(bucket).tolist():
        sel = bucket == b
        rows, local = torch.unique(w[sel], return_inverse=True)
        slots = torch.full((len(rows), int(size[sel].max())), -1, dtype=torch.long, device=window.device)
        slots[local, col[sel]] = order[sel]
        groups.append(slots)
    return groups


def exponential_split(d: torch.Tensor, a: float) -> torch.Tensor:
    """The release's relative index of a range difference d (metres): 0 for [0, a), 1 for [a, 2a), 2 for
    [2a, 4a), 3 for [4a, 6a), 4 for [6a, 10a), ... (each length used twice, then doubled); -1 - index(|d|) for
    d < 0 (release `exponential_split`)."""
    ad = d.abs()
    idx = 2 * torch.floor(torch.log((ad + 2 * a) / a) / math.log(2)) - 2
    idx = idx + ((3 * torch.pow(2.0, torch.div(idx, 2, rounding_mode="floor")) - 2) * a <= ad).to(d.dtype)
    pos = (d >= 0).to(d.dtype)
    return (idx * (2 * pos - 1) + (pos - 1)).long()


class DualWindowAttention(nn.Module):
    """Multi-head self-attention, half of the heads in cubic windows, half in radial windows (module doc)."""

    def __init__(self, dim: int, heads: int, cube: float = 0.3, radial: tuple[float, float, float] = (2.0, 2.0, 120.0),
                 radial_quant: tuple[float, float, float] | None = None, rpe_a: float = 0.0125):
        super().__init__()
        if heads < 2 or dim % heads:
            raise ValueError(f"need at least 2 heads dividing dim, got heads={heads}, dim={dim}")
        self.heads, self.dim, self.rpe_a = heads, dim, rpe_a
        self.head_dim = dim // heads
        self.h1 = heads // 2  # cubic heads; the rest are radial
        self.register_buffer("cube", torch.full((3,), float(cube)), persistent=False)
        self.register_buffer("radial", torch.tensor(radial, dtype=torch.float32), persistent=False)
        quant = radial_quant or tuple(s / QUANT_STEPS for s in radial)
        self.register_buffer("radial_quant", torch.tensor(quant, dtype=torch.float32), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        length = QUANT_STEPS
        # tables (index, axis, head, channel): 2L - 1 relative indices for cubic heads, 2L for radial heads
        self.cube_tables = nn.ParameterList(
            nn.Parameter(torch.zeros(2 * length - 1, 3, self.h1, self.head_dim)) for _ in range(3))
        self.radial_tables = nn.ParameterList(
            nn.Parameter(torch.zeros(2 * length, 3, heads - self.h1, self.head_dim)) for _ in range(3))
        for t in [*self.cube_tables, *self.radial_tables]:
            nn.init.trunc_normal_(t, std=0.02)

    def _branch(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, batch: torch.Tensor,
                window: torch.Tensor, quant: torch.Tensor, tables: nn.ParameterList, split: bool) -> torch.Tensor:
        """Attention of one branch. q, k, v (M, h, d); pos (M, 3) in the branch's coordinates."""
        m, h, d = q.shape
        length = QUANT_STEPS
        grid = torch.floor(torch.remainder(pos - pos.min(0).values, window) / quant).long()  # place in the window
        tq, tk, tv = (t.flatten(0, 1) for t in tables)  # (T * 3, h, d): row r * 3 + axis
        span = tq.shape[0]
        # every token's products with every table row, (M * 3T, h): q . Tq[r] and k . Tk[r] are then gathers
        qt = torch.einsum("mhd,thd->mth", q, tq).reshape(-1, h)
        kt = torch.einsum("mhd,thd->mth", k, tk).reshape(-1, h)
        axes = torch.arange(3, device=q.device)
        out = torch.zeros_like(q)
        mass = torch.zeros((m * span, h), dtype=q.dtype, device=q.device)  # attention mass per token, table row
        for slots in window_groups(window_index(pos, batch, window)):
            width = slots.shape[1]
            step = max(1, SLAB // (width * width * 3 * h))
            for s in range(0, len(slots), step):
                sl = slots[s: s + step]
                valid = sl >= 0
                idx = sl.clamp(min=0)
                r = grid[idx][:, :, None, :] - grid[idx][:, None, :, :] + (length - 1)  # (R, K, K, 3)
                if split:  # range axis: exponential split of the range difference (release: + 24, clamped)
                    rng = pos[idx, 2]
                    r[..., 2] = exponential_split(rng[:, :, None] - rng[:, None, :], self.rpe_a) + length
                    r = r.clamp(0, 2 * length - 1)
                rows = r * 3 + axes  # (R, K, K, 3)
                qs, ks, vs = (t[idx].permute(0, 2, 1, 3) for t in (q, k, v))  # (R, h, K, d)
                rpe = qt[idx[:, :, None, None] * span + rows].sum(3) + kt[idx[:, None, :, None] * span + rows].sum(3)
                logits = qs @ ks.transpose(-1, -2) + rpe.permute(0, 3, 1, 2)  # (R, h, K, K)
                logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
                attn = torch.softmax(logits, -1) * valid[:, None, :, None]  # padded queries: no mass
                out[sl[valid]] = (attn @ vs).permute(0, 2, 1, 3)[valid]
                pair_attn = attn.permute(0, 2, 3, 1).reshape(-1, h)
                for a in range(3):
                    mass.index_add_(0, (idx[:, :, None] * span + rows[..., a]).reshape(-1), pair_attn)
        return out + torch.einsum("mth,thd->mhd", mass.view(m, span, h), tv)

    def forward(self, x: torch.Tensor, xyz: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """x (M, dim) voxel tokens, xyz (M, 3) their positions in metres (sensor at the origin), batch (M,)."""
        m = x.shape[0]
        q, k, v = self.qkv(x).view(m, 3, self.heads, self.head_dim).unbind(1)
        q = q * self.head_dim ** -0.5
        h1 = self.h1
        cube = self._branch(q[:, :h1], k[:, :h1], v[:, :h1], xyz, batch, self.cube, self.cube / QUANT_STEPS,
                            self.cube_tables, split=False)
        radial = self._branch(q[:, h1:], k[:, h1:], v[:, h1:], cart2sphere(xyz), batch, self.radial,
                              self.radial_quant, self.radial_tables, split=True)
        return self.proj(torch.cat([cube, radial], 1).reshape(m, self.dim))


class SphereFormerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, drop_path: float = 0.0, cube: float = 0.3,
                 radial: tuple[float, float, float] = (2.0, 2.0, 120.0),
                 radial_quant: tuple[float, float, float] | None = None, rpe_a: float = 0.0125,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = DualWindowAttention(dim, heads, cube, radial, radial_quant, rpe_a)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, xyz: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x), xyz, batch), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)
