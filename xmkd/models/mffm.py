"""FtD++'s multi-modal feature fusion module (MFFM) and its parts (METHODS.md section 2).

CBAM (channel then spatial attention) refines the 2D feature map; point features are gathered from it; multi-head
external attention (shared memory units with double normalisation, Guo et al.) refines the 2D (64) and 3D (16)
point features with residuals; their concatenation (80) goes through Linear+ReLU, external attention and
Linear+BN+ReLU into the fused 80-d point feature. The module's inputs are detached backbone features (the fusion
learns from them without steering the backbones). Attention over points is normalised within each sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 8, kernel: int = 7):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(channels // reduction, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(pooled))


def segment_softmax(logits: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of (N, ...) logits over the rows of each segment (segment (N,) in 0..num_segments-1)."""
    shape = (num_segments, *logits.shape[1:])
    index = segment.view(-1, *([1] * (logits.dim() - 1))).expand_as(logits)
    peak = torch.full(shape, float("-inf"), device=logits.device, dtype=logits.dtype)
    peak = peak.scatter_reduce(0, index, logits, reduce="amax", include_self=True)
    e = torch.exp(logits - peak.gather(0, index))
    total = torch.zeros(shape, device=logits.device, dtype=logits.dtype).scatter_add(0, index, e)
    return e / total.gather(0, index)


class ExternalAttention(nn.Module):
    """Multi-head external attention over the points of each sample, with a residual connection."""

    def __init__(self, dim: int, heads: int = 4, memory: int = 64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.mk = nn.Linear(self.head_dim, memory, bias=False)  # the memory units M_k, M_v, shared by the heads
        self.mv = nn.Linear(memory, self.head_dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, sample: torch.Tensor, num_samples: int) -> torch.Tensor:
        n = x.shape[0]
        q = self.q(x).view(n, self.heads, self.head_dim)
        attn = segment_softmax(self.mk(q), sample, num_samples)  # over the points of each sample ...
        attn = attn / (attn.sum(-1, keepdim=True) + 1e-9)  # ... then over the memory units (double normalisation)
        y = self.mv(attn).reshape(n, -1)
        return self.norm(x + self.out(y))


class MFFM(nn.Module):
    def __init__(self, dim_2d: int = 64, dim_3d: int = 16, heads: int = 4, memory: int = 64):
        super().__init__()
        fused = dim_2d + dim_3d
        self.cbam = CBAM(dim_2d)
        self.ea_2d = ExternalAttention(dim_2d, heads, memory)
        self.ea_3d = ExternalAttention(dim_3d, heads, memory)
        self.mix = nn.Sequential(nn.Linear(fused, fused), nn.ReLU(inplace=True))
        self.ea = ExternalAttention(fused, heads, memory)
        self.proj = nn.Sequential(nn.Linear(fused, fused, bias=False), nn.BatchNorm1d(fused), nn.ReLU(inplace=True))
        self.out_channels = fused

    def forward(self, image_features: torch.Tensor, point_image: torch.Tensor, point_uv: torch.Tensor,
                point_features_3d: torch.Tensor, point_sample: torch.Tensor, num_samples: int) -> torch.Tensor:
        """image_features (B, 64, H, W) and point features (N, 16), both detached here; every point lies in an
        image (`point_image`, pixel `point_uv` = (u, v))."""
        img = self.cbam(image_features.detach())
        h, w = img.shape[-2:]
        cols = point_uv[:, 0].long().clamp(0, w - 1)
        rows = point_uv[:, 1].long().clamp(0, h - 1)
        f2 = self.ea_2d(img[point_image, :, rows, cols], point_sample, num_samples)
        f3 = self.ea_3d(point_features_3d.detach(), point_sample, num_samples)
        return self.proj(self.ea(self.mix(torch.cat([f2, f3], 1)), point_sample, num_samples))
