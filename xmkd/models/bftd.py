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

from torch import nn

from xmkd.models.mffm import MFFM, ExternalAttention

VARIANTS = ("mffm", "mffm_v1")


class BFtDFusion(MFFM):
    """FtD++'s MFFM with BFtD's MLP, attention width and classifier: `proj` is the classifier here, so the forward
    (CBAM, gather, attention on 2D and 3D, MLP, attention, `proj`) is MFFM's and returns (N, classes) logits."""

    def __init__(self, classes: int, variant: str = "mffm", heads: int = 32, memory: int = 64, expansion: int = 4,
                 dropout: float = 0.2, scope: str = "batch"):
        if variant not in VARIANTS:
            raise ValueError(f"BFtD fusion variant: expected one of {VARIANTS}, got {variant!r}")
        super().__init__(64, 16, heads, memory, expansion, dropout, scope)  # CBAM(64, 4, 3), EA(64), EA(16)
        attention = (heads, memory, expansion, dropout, scope)
        if variant == "mffm":
            self.mix = nn.Sequential(nn.Linear(80, 80), nn.ReLU(inplace=True), nn.Linear(80, 64))
            self.ea = ExternalAttention(64, *attention)
            self.proj = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
                                      nn.Linear(32, classes))
        else:
            self.mix = nn.Sequential(nn.Linear(80, 80), nn.ReLU(inplace=True), nn.Linear(80, 80),
                                     nn.ReLU(inplace=True))
            self.ea = ExternalAttention(80, *attention)
            self.proj = nn.Sequential(nn.Linear(80, 64), nn.ReLU(inplace=True), nn.Linear(64, 64), nn.Sigmoid(),
                                      nn.Linear(64, classes))
        self.out_channels = classes
