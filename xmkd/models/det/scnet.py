"""The released CMKD / HSRDN "domain adaptation" block: SCNet bottlenecks between the student's Z-collapse and its
distilled BEV feature (`pcdet/models/backbones_2d/domain_adaptation/scnet.py` in both releases; configured as
`DOMAIN_ADAPTATION: {NAME: SCNET, NUM_BLOCKS: 5}`, which builds `range(1, 5)` = 4 blocks).

Each `SCBottleneck` splits its input into two halves by 1x1 convs: a plain 3x3 conv on one, a gated `SCConv` on the
other, then a 1x1 conv back to the input width and a residual add. The gate is where the two releases differ:

- `sc` (CMKD, SCNet's self-calibration): sigmoid(x + up(k2(avgpool_4(x)))) multiplies k3(x);
- `se` (HSRDN): a squeeze-and-excitation gate, sigmoid(W2 relu(W1 avgpool(x))) + 1e-8, **divided by its sum over
  the batch and the channels**, multiplies k3(x). As released, HSRDN still builds SCConv's pooled branch `k2` but
  never calls it: its weights exist (and count) but get no gradient. Because the gate is normalised over the batch,
  the block's output depends on the batch size (as released).

Parameter counts for C input channels, g = C / 2 (every 3x3 conv has a bias, the 1x1 ones do not):
block = 2 C g + 4 g [1x1 + BN] + 4 (9 g^2 + g + 2 g) [k1..k4 + BN] + 2 g C + 2 C [conv3 + BN],
plus 2 g (g / 16) + g / 16 + g for the SE gate (checked against the module by
tests/test_hsrdn_parts.py::test_scnet_has_the_released_parameter_counts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GATES = ("sc", "se")
SE_INITS = ("fork", "inline")


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout))


class SCConv(nn.Module):
    """The gated 3x3 branch of an SCBottleneck; `gate` = "sc" (CMKD) or "se" (HSRDN), see the module docstring.
    `se_init` = "fork": the SE convs draw their initial weights from a generator seeded by one draw of a fork of the
    RNG, and the RNG continues as if they were not there, so everything built after them (the other blocks, the BEV
    backbone) gets the same weights in an HSRDN and a CMKD student of one seed; "inline": drawn in line, as released
    (and as xmkd's runs before 2026-12-03)."""

    def __init__(self, channels: int, gate: str, pooling_r: int = 4, se_init: str = "fork"):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"SCConv gate: expected one of {GATES}, got {gate!r}")
        if se_init not in SE_INITS:
            raise ValueError(f"SCConv se_init: expected one of {SE_INITS}, got {se_init!r}")
        self.gate = gate
        self.k2 = nn.Sequential(nn.AvgPool2d(pooling_r, pooling_r), *_conv_bn(channels, channels))
        self.k3 = _conv_bn(channels, channels)
        self.k4 = _conv_bn(channels, channels)
        if gate == "se" and se_init == "inline":
            self.se = self._se(channels)
        elif gate == "se":
            with torch.random.fork_rng(devices=[]):
                # its own stream: drawing from the fork itself would repeat the numbers the next layer gets
                torch.default_generator.manual_seed(int(torch.randint(2 ** 62, ())))  # the CPU one only
                self.se = self._se(channels)

    @staticmethod
    def _se(channels: int) -> nn.Sequential:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels // 16, 1), nn.ReLU(),
                             nn.Conv2d(channels // 16, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        if self.gate == "sc":
            weight = torch.sigmoid(x + F.interpolate(self.k2(x), x.shape[2:]) + 1e-8)
        else:
            weight = self.se(x) + 1e-8
            weight = weight / weight.sum(dim=(0, 1), keepdim=True)  # over batch and channels, as released
        return self.k4(self.k3(x) * weight)


class SCBottleneck(nn.Module):
    def __init__(self, channels: int, gate: str, pooling_r: int = 4, se_init: str = "fork"):
        super().__init__()
        g = channels // 2
        self.conv1_a = nn.Conv2d(channels, g, 1, bias=False)
        self.bn1_a = nn.BatchNorm2d(g)
        self.conv1_b = nn.Conv2d(channels, g, 1, bias=False)
        self.bn1_b = nn.BatchNorm2d(g)
        self.k1 = _conv_bn(g, g)
        self.scconv = SCConv(g, gate, pooling_r, se_init)
        self.conv3 = nn.Conv2d(2 * g, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.k1(F.relu(self.bn1_a(self.conv1_a(x)))))
        b = F.relu(self.scconv(F.relu(self.bn1_b(self.conv1_b(x)))))
        return F.relu(self.bn3(self.conv3(torch.cat([a, b], 1))) + x)


class SCNet(nn.Sequential):
    """`blocks` SCBottlenecks of constant width (the release's NUM_BLOCKS 5 = 4 blocks)."""

    def __init__(self, channels: int, blocks: int, gate: str, se_init: str = "fork"):
        if channels % 2 or (gate == "se" and channels < 32):
            raise ValueError(f"SCNet: the BEV width must be even (and >= 32 for the SE gate's C / 32 squeeze), "
                             f"got {channels}")
        super().__init__(*[SCBottleneck(channels, gate, se_init=se_init) for _ in range(blocks)])
