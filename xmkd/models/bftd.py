"""BFtD's fusion classifier (the conference version of FtD++; Barcaaaa/BFtD-xMUDA `xmuda/models/xmuda_arch.py`,
"BFTD:" below): an MFFM whose output is a class prediction of its own, trained with its own source CE.

CBAM(64, reduction 4, kernel 3, + residual) refines the (detached) 2D feature map; point features are gathered from
it; external attention (the release's `Mult_EA`: 32 heads over a 4x expansion, 64 memory units, dropout 0.2,
softmax over every point of the batch; + residual) refines the 2D (64) and 3D (16) point features; their
concatenation (80) goes through an MLP, external attention (+ residual) and a classifier. Two released variants:
- `mffm` (day->night, BFTD:xmuda/models/build_dn.py): MLP Linear 80->80, ReLU, Linear 80->64; attention on 64;
  classifier Linear 64->32, BatchNorm, ReLU, Linear 32->K (BFTD:xmuda_arch.py `MFFM`);
- `mffm_v1` (usa->singapore, a2d2, BFTD:build_us.py, build_as.py): MLP Linear 80->80, ReLU, Linear 80->80, ReLU;
  attention on 80; classifier Linear 80->64, ReLU, Linear 64->64, Sigmoid, Linear 64->K (`MFFM_v1`).
"""

from __future__ import annotations

import torch
from torch import nn

from xmkd.models.mffm import CBAM, ExternalAttention

VARIANTS = ("mffm", "mffm_v1")


class BFtDFusion(nn.Module):
    def __init__(self, classes: int, variant: str = "mffm", heads: int = 32, memory: int = 64, expansion: int = 4,
                 dropout: float = 0.2, scope: str = "batch"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"BFtD fusion variant: expected one of {VARIANTS}, got {variant!r}")
        attention = (heads, memory, expansion, dropout, scope)
        self.cbam = CBAM(64, 4, 3)
        self.ea_2d = ExternalAttention(64, *attention)
        self.ea_3d = ExternalAttention(16, *attention)
        if variant == "mffm":
            self.mix = nn.Sequential(nn.Linear(80, 80), nn.ReLU(inplace=True), nn.Linear(80, 64))
            self.ea = ExternalAttention(64, *attention)
            self.cls = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
                                     nn.Linear(32, classes))
        else:
            self.mix = nn.Sequential(nn.Linear(80, 80), nn.ReLU(inplace=True), nn.Linear(80, 80),
                                     nn.ReLU(inplace=True))
            self.ea = ExternalAttention(80, *attention)
            self.cls = nn.Sequential(nn.Linear(80, 64), nn.ReLU(inplace=True), nn.Linear(64, 64), nn.Sigmoid(),
                                     nn.Linear(64, classes))

    def forward(self, image_features: torch.Tensor, point_image: torch.Tensor, point_uv: torch.Tensor,
                point_features_3d: torch.Tensor, point_sample: torch.Tensor, num_samples: int) -> torch.Tensor:
        """image_features (B, 64, H, W) and 3D point features (N, 16), both detached here (BFTD:train_dn.py#L318);
        every point lies in image `point_image` at pixel `point_uv` = (u, v). Returns (N, classes) logits."""
        img = self.cbam(image_features.detach())
        h, w = img.shape[-2:]
        cols = point_uv[:, 0].long().clamp(0, w - 1)
        rows = point_uv[:, 1].long().clamp(0, h - 1)
        f2 = self.ea_2d(img[point_image, :, rows, cols], point_sample, num_samples)
        f3 = self.ea_3d(point_features_3d.detach(), point_sample, num_samples)
        return self.cls(self.ea(self.mix(torch.cat([f2, f3], 1)), point_sample, num_samples))
