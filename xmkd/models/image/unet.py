"""UNet-ResNet34, the 2D network of xMUDA / BFtD / FtD++ as released (METHODS.md section 2).

Release: FtD-PlusPlus `xmuda/models/resnet34_unet.py` (identical in xmuda / xmuda_journal). Encoder: a ResNet with a
stride-1 conv1 (torchvision parameter names under `backbone`, so an ImageNet state dict loads strictly); one
dropout (p = 0.4) after layer3 — the dropped-out map is also layer3's skip — and again after layer4 (#L80-L83).
Decoder (`dec_stage`, #L32-L55, #L88-L110): per stage a 2x2 stride-2 transposed conv + BatchNorm + ReLU, the
encoder skip concatenated *before* the upsampled map, a 3x3 conv + BatchNorm + ReLU; the last 3x3 conv (128 -> 64)
is linear (no BatchNorm, no ReLU), so the 64-channel feature map is signed. Inputs are padded to a multiple of 16
and the output is cropped back to the input's full resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xmkd.models.image.resnet import ResNet


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """The release's `dec_stage` conv: 3x3 conv (biased) + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def up_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """The release's `dec_stage` t_conv: 2x2 stride-2 transposed conv (biased) + BatchNorm + ReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNetResNet(nn.Module):
    """`depth` resnet18 or resnet34 (the release's; both have the channels 64, 64, 128, 256, 512, so the decoder is
    the same), `dropout` after layer3 and layer4, `pretrained` an ImageNet state dict file for the encoder."""

    def __init__(self, depth: str = "resnet34", dropout: float = 0.4, pretrained: str = ""):
        super().__init__()
        self.backbone = ResNet(depth, stem_stride=1)
        if pretrained:
            self.backbone.load_pretrained(pretrained)
        c = self.backbone.channels  # [stem (1/1), layer1 (1/2), layer2 (1/4), layer3 (1/8), layer4 (1/16)]
        if c != [64, 64, 128, 256, 512]:
            raise ValueError(f"UNetResNet needs a ResNet with basic blocks (resnet18/34), got {depth!r}")
        # the release's names: the stage-k transposed conv maps layer(k-1)'s output width to its input width
        self.dec_t_conv_stage5 = up_bn_relu(c[4], c[3])
        self.dec_conv_stage4, self.dec_t_conv_stage4 = conv_bn_relu(2 * c[3], c[3]), up_bn_relu(c[3], c[2])
        self.dec_conv_stage3, self.dec_t_conv_stage3 = conv_bn_relu(2 * c[2], c[2]), up_bn_relu(c[2], c[1])
        self.dec_conv_stage2, self.dec_t_conv_stage2 = conv_bn_relu(2 * c[1], c[1]), up_bn_relu(c[1], c[0])
        self.dec_conv_stage1 = nn.Conv2d(2 * c[0], c[0], 3, padding=1)  # linear: signed features
        self.dropout = nn.Dropout(dropout)
        self.out_channels = c[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 64, H, W)."""
        h, w = images.shape[-2:]
        b = self.backbone
        s = b.stem(F.pad(images, (0, -w % 16, 0, -h % 16)))
        f1 = b.layer1(b.maxpool(s))
        f2 = b.layer2(f1)
        f3 = self.dropout(b.layer3(f2))
        y = self.dec_t_conv_stage5(self.dropout(b.layer4(f3)))
        y = self.dec_t_conv_stage4(self.dec_conv_stage4(torch.cat([f3, y], 1)))
        y = self.dec_t_conv_stage3(self.dec_conv_stage3(torch.cat([f2, y], 1)))
        y = self.dec_t_conv_stage2(self.dec_conv_stage2(torch.cat([f1, y], 1)))
        return self.dec_conv_stage1(torch.cat([s, y], 1))[..., :h, :w]
