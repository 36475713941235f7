"""FtD++'s multi-modal feature fusion module (MFFM) and its fused 2D head, as released (METHODS.md section 2).

Release: FtD-PlusPlus `xmuda/models/bftd/xmuda_arch_uni.py` (`MFFM` #L164-L205, `Net2DSeg` #L27-L59),
`xmuda/models/CBAM.py`, `xmuda/models/ExternalAttention.py`. CBAM (channel then spatial attention, plus the input)
refines the 2D feature map; point features are gathered from it; multi-head external attention with residuals
refines the 2D (64) and 3D (16) point features; their concatenation (80) goes through Linear+ReLU, external
attention (+ residual) and Linear+BN+ReLU into the fused 80-d point feature. The module's inputs are detached
backbone features (the fusion learns from them without steering the backbones; `train_us_bftd_uni.py#L314`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CBAM(nn.Module):
    """CBAM with a residual: x + SA(CA(x) * x) * (CA(x) * x) (release `CBAMBlock`, built with reduction 4, kernel 3).

    Channel attention: a bias-free 1x1-conv MLP (C -> C / reduction -> C) on the max- and average-pooled map;
    spatial attention: a biased k x k conv on the channel max and mean."""

    def __init__(self, channels: int, reduction: int = 4, kernel: int = 3):
        super().__init__()
        hidden = channels // reduction
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(hidden, channels, 1, bias=False))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        out = x * torch.sigmoid(self.mlp(F.adaptive_max_pool2d(x, 1)) + self.mlp(F.adaptive_avg_pool2d(x, 1)))
        pooled = torch.cat([out.amax(1, keepdim=True), out.mean(1, keepdim=True)], 1)
        return out * torch.sigmoid(self.spatial(pooled)) + x


def segment_softmax(logits: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of (N, ...) logits over the rows of each segment (segment (N,) in 0..num_segments-1)."""
    shape = (num_segments, *logits.shape[1:])
    index = segment.view(-1, *([1] * (logits.dim() - 1))).expand_as(logits)
    peak = torch.full(shape, float("-inf"), device=logits.device, dtype=logits.dtype)
    peak = peak.scatter_reduce(0, index, logits, reduce="amax", include_self=True)
    e = torch.exp(logits - peak.gather(0, index))
    total = torch.zeros(shape, device=logits.device, dtype=logits.dtype).scatter_add(0, index, e)
    return e / total.gather(0, index)


SCOPES = ("batch", "sample")


class ExternalAttention(nn.Module):
    """Multi-head external attention (Guo et al.) with a residual: x + EA(x) (release `Mult_EA(dim)` + the residual
    its caller adds).

    x (N, dim) -> Linear dim -> expansion * dim, split into `heads` heads; a shared memory M_k (Linear head_dim ->
    memory, biased) scores each head's row; softmax over the points (`scope` "batch": every point of the batch, the
    release's; "sample": the points of each sample), then L1 over the memory units; dropout; memory M_v (Linear
    memory -> head_dim, biased); heads concatenated; Linear expansion * dim -> dim; dropout.
    Release defaults: 32 heads (8 x the expansion 4), 64 memory units (256 / 4), dropout 0.2 on both."""

    def __init__(self, dim: int, heads: int = 32, memory: int = 64, expansion: int = 4, dropout: float = 0.2,
                 scope: str = "batch"):
        super().__init__()
        if (dim * expansion) % heads:
            raise ValueError(f"{expansion} x dim {dim} is not divisible by {heads} heads")
        if scope not in SCOPES:
            raise ValueError(f"attention scope: expected one of {SCOPES}, got {scope!r}")
        self.heads, self.head_dim, self.scope = heads, dim * expansion // heads, scope
        self.expand = nn.Linear(dim, dim * expansion)
        self.mk = nn.Linear(self.head_dim, memory)  # the memory units M_k, M_v, shared by the heads
        self.mv = nn.Linear(memory, self.head_dim)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim * expansion, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, sample: torch.Tensor, num_samples: int) -> torch.Tensor:
        """x (N, dim), sample (N,) in 0..num_samples-1 -> (N, dim)."""
        n = x.shape[0]
        scores = self.mk(self.expand(x).view(n, self.heads, self.head_dim))  # (N, heads, memory)
        attn = scores.softmax(0) if self.scope == "batch" else segment_softmax(scores, sample, num_samples)
        attn = attn / (attn.sum(-1, keepdim=True) + 1e-9)  # double normalisation
        y = self.mv(self.attn_drop(attn)).reshape(n, -1)
        return x + self.proj_drop(self.proj(y))


class MFFM(nn.Module):
    """The release's MFFM: CBAM(64, 4, 3), external attention on the 2D (64) and 3D (16) point features, Linear
    80 -> 80 + ReLU, external attention (80), Linear 80 -> 80 + BatchNorm + ReLU."""

    def __init__(self, dim_2d: int = 64, dim_3d: int = 16, heads: int = 32, memory: int = 64, expansion: int = 4,
                 dropout: float = 0.2, scope: str = "batch"):
        super().__init__()
        fused = dim_2d + dim_3d
        self.cbam = CBAM(dim_2d)
        self.ea_2d = ExternalAttention(dim_2d, heads, memory, expansion, dropout, scope)
        self.ea_3d = ExternalAttention(dim_3d, heads, memory, expansion, dropout, scope)
        self.mix = nn.Sequential(nn.Linear(fused, fused), nn.ReLU(inplace=True))
        self.ea = ExternalAttention(fused, heads, memory, expansion, dropout, scope)
        self.proj = nn.Sequential(nn.Linear(fused, fused), nn.BatchNorm1d(fused), nn.ReLU(inplace=True))
        self.out_channels = fused

    def forward(self, image_features: torch.Tensor, point_image: torch.Tensor, point_uv: torch.Tensor,
                point_features_3d: torch.Tensor, point_sample: torch.Tensor, num_samples: int) -> torch.Tensor:
        """image_features (B, 64, H, W) and point features (N, 16), both detached here; every point lies in an
        image (`point_image`, pixel `point_uv` = (u, v)). Returns the fused (N, 80) feature."""
        img = self.cbam(image_features.detach())
        h, w = img.shape[-2:]
        cols = point_uv[:, 0].long().clamp(0, w - 1)
        rows = point_uv[:, 1].long().clamp(0, h - 1)
        f2 = self.ea_2d(img[point_image, :, rows, cols], point_sample, num_samples)
        f3 = self.ea_3d(point_features_3d.detach(), point_sample, num_samples)
        return self.proj(self.ea(self.mix(torch.cat([f2, f3], 1)), point_sample, num_samples))


class FusedHead(nn.Module):
    """FtD++'s fused 2D head P^F (release `Net2DSeg` `proj_head1`, `proj_head2`, `cls_head1`, #L27-L31, #L54-L59):
    cls(proj2([f2 ; ReLU(proj1(fused))])), proj1 Linear dim_fused -> dim_2d, proj2 Linear 2 dim_2d -> dim_2d
    (no activation after it), cls Linear dim_2d -> classes."""

    def __init__(self, dim_2d: int, dim_fused: int, classes: int):
        super().__init__()
        self.proj1 = nn.Linear(dim_fused, dim_2d)
        self.proj2 = nn.Linear(2 * dim_2d, dim_2d)
        self.cls = nn.Linear(dim_2d, classes)

    def forward(self, f2: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """f2 (N, dim_2d) 2D point features, fused (N, dim_fused) MFFM features -> (N, classes) logits."""
        return self.cls(self.proj2(torch.cat([f2, F.relu(self.proj1(fused))], 1)))
