"""SwiftNet (Orsic et al., CVPR 2019), single scale, as U2MKD releases it (core/models/image_branch/swiftnet.py
of github:isunLt/U2MKD @ d8dfa69): a ResNet-18 encoder, spatial pyramid pooling on the last stage (a 1x1
bottleneck to `width` channels, then 3 pooled levels of width // 3 channels on grids of 8, 4 and 2 rows, BN
momentum 0.012), and a ladder decoder of `width` channels that adds a lateral 1x1 projection of each encoder
stage while upsampling (bilinear, align_corners=True as the release's `upsample`). `encode`, `spp` and
`ladder` are separate so that fusion blocks (U2MKD's L2C) can replace the stage features in between.
The pixel head (BN-ReLU-1x1) runs, with `head_at_image`, on the decoder features upsampled to the image as the
release does (spvcnn_swiftnet18_spformer_tsd_full.py:551-556, swiftnet.py `forward_up`), else at the decoder's
resolution with its logits upsampled (no `width`-channel map at full resolution is held).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xmkd.models.image.resnet import ResNet


def bn_relu_conv(cin: int, cout: int, k: int, momentum: float = 0.1) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(cin, momentum=momentum), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, cout, k, padding=k // 2, bias=False))


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class SPP(nn.Module):
    def __init__(self, cin: int, width: int, grids: tuple[int, ...] = (8, 4, 2), bottleneck: int | None = None,
                 momentum: float = 0.012):
        super().__init__()
        self.grids = grids
        bottleneck = bottleneck or width
        self.reduce = bn_relu_conv(cin, bottleneck, 1, momentum)
        level = bottleneck // len(grids)
        self.levels = nn.ModuleList(bn_relu_conv(bottleneck, level, 1, momentum) for _ in grids)
        self.fuse = bn_relu_conv(bottleneck + level * len(grids), width, 1, momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        h, w = x.shape[-2:]
        pooled = [x]
        for g, conv in zip(self.grids, self.levels):
            # grids relative to the aspect ratio (SwiftNet): g cells along the short side
            gh, gw = (g, max(1, round(g * w / h))) if h <= w else (max(1, round(g * h / w)), g)
            p = conv(F.adaptive_avg_pool2d(x, (min(gh, h), min(gw, w))))
            pooled.append(upsample(p, (h, w)))
        return self.fuse(torch.cat(pooled, 1))


class Upsample(nn.Module):
    """x <- blend(upsample(x) + lateral(skip))."""

    def __init__(self, skip_channels: int, width: int):
        super().__init__()
        self.lateral = bn_relu_conv(skip_channels, width, 1)
        self.blend = bn_relu_conv(width, width, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.blend(upsample(x, skip.shape[-2:]) + self.lateral(skip))


class SwiftNet(nn.Module):
    def __init__(self, num_classes: int, width: int = 128, depth: str = "resnet18", stem_stride: int = 2,
                 head_at_image: bool = True):
        super().__init__()
        self.head_at_image = head_at_image
        self.backbone = ResNet(depth, stem_stride=stem_stride)
        ch = self.backbone.channels
        self.spp = SPP(ch[4], width)
        self.up = nn.ModuleList([Upsample(ch[3], width), Upsample(ch[2], width), Upsample(ch[1], width)])
        self.head = bn_relu_conv(width, num_classes, 1)
        self.width = width

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """ResNet stage features [stem, layer1, layer2, layer3, layer4]."""
        return self.backbone(images)

    def ladder(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """The decoder from the SPP output x over the [layer1, layer2, layer3] skips: `width` channels at
        layer1's resolution."""
        for up, skip in zip(self.up, (skips[2], skips[1], skips[0])):
            x = up(x, skip)
        return x

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """`width`-channel features at layer1's resolution from [stem, layer1, ..., layer4]."""
        return self.ladder(self.spp(feats[4]), feats[1:4])

    def classify(self, feats: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Decoder features (n, width, h, w) -> pixel logits (n, classes, H, W) at `size` = (H, W), the head before
        the upsampling (`head_at_image=false`) or after it (the release)."""
        if self.head_at_image:
            return self.head(upsample(feats, size))
        return upsample(self.head(feats), size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits at the input resolution."""
        return self.classify(self.decode(self.encode(images)), images.shape[-2:])
