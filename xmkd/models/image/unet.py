"""UNet-ResNet34, the 2D network of xMUDA / BFtD / FtD++ (METHODS.md section 2): a ResNet-34 encoder with a
stride-1 conv1 (ImageNet-initialisable, torchvision names), four decoder stages (2x transposed conv, concat the
encoder skip, 3x3 conv), dropout, and a `width`-channel (64) feature map at the input's full resolution. Inputs
are padded to a multiple of 16 and the output is cropped back."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xmkd.models.image.resnet import ResNet


class UpStage(nn.Module):
    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = nn.Sequential(nn.Conv2d(cout + skip, cout, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], 1))


class UNetResNet(nn.Module):
    def __init__(self, depth: str = "resnet34", dropout: float = 0.4, pretrained: str = ""):
        super().__init__()
        self.backbone = ResNet(depth, stem_stride=1)
        if pretrained:
            self.backbone.load_pretrained(pretrained)
        ch = self.backbone.channels  # [stem 64 (1/1), layer1 (1/2), layer2 (1/4), layer3 (1/8), layer4 (1/16)]
        self.up = nn.ModuleList([UpStage(ch[4], ch[3], 256), UpStage(256, ch[2], 128), UpStage(128, ch[1], 64),
                                 UpStage(64, ch[0], 64)])
        self.dropout = nn.Dropout(dropout)
        self.out_channels = 64

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised -> (B, 64, H, W)."""
        h, w = images.shape[-2:]
        x = F.pad(images, (0, -w % 16, 0, -h % 16))
        feats = self.backbone(x)
        y = feats[4]
        for up, skip in zip(self.up, (feats[3], feats[2], feats[1], feats[0])):
            y = up(y, skip)
        return self.dropout(y)[..., :h, :w]
