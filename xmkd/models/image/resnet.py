"""ResNet-18/34/50 written with torchvision's module and parameter names, so a torchvision (or timm
`resnet*.tv_in1k`) ImageNet state dict loads with `strict=True` from a file path — torchvision itself is not
needed (and has no CPU build here).

Options the methods need: `stem_stride=1` (SwiftNet and xMUDA's UNet-ResNet34 keep full resolution in conv1)
and `dilate=(False, True, True)` (DeepLabV3 features at output stride 8, torchvision's
`replace_stride_with_dilation`). `forward` returns the feature maps of every stage. The ImageNet classifier
(`fc`: 513,000 parameters for ResNet-18/34, 2,049,000 for ResNet-50) is not built, as no method uses it: its keys
in a torchvision / timm checkpoint (and in xmkd checkpoints of older versions, which held it) are dropped on load,
every other key must match.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from xmkd.models.weights import load_module_from_file


def conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = conv3x3(cin, width, stride, dilation)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width, 1, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output before its last ReLU."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out)) + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.preact(x))


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits in the 3x3 convolution."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, width * 4)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output before its last ReLU."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out)) + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.preact(x))


def run_layer(layer: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A ResNet stage's output and its pre-activation (the last block's output before its ReLU), as SwiftNet's
    `forward_resblock` returns them (the lateral `skip`)."""
    for block in layer[:-1]:
        x = block(x)
    pre = layer[-1].preact(x)
    return torch.relu(pre), pre


SPECS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)),
         "resnet50": (Bottleneck, (3, 4, 6, 3))}


class ResNet(nn.Module):
    # the ImageNet classifier's keys, which checkpoints may hold and this backbone has not (`load_weights` skips them)
    ignored_checkpoint_keys = ("fc.weight", "fc.bias")

    def __init__(self, depth: str = "resnet18", stem_stride: int = 2, dilate: tuple[bool, bool, bool] = (False,) * 3):
        super().__init__()
        if depth not in SPECS:
            raise ValueError(f"unknown ResNet {depth!r}; choose from {', '.join(SPECS)}")
        block, layers = SPECS[depth]
        self.depth = depth
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, 7, stem_stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.layer1 = self._layer(block, 64, layers[0])
        self.layer2 = self._layer(block, 128, layers[1], 2, dilate[0])
        self.layer3 = self._layer(block, 256, layers[2], 2, dilate[1])
        self.layer4 = self._layer(block, 512, layers[3], 2, dilate[2])
        self.channels = [64, 64 * block.expansion, 128 * block.expansion, 256 * block.expansion,
                         512 * block.expansion]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _layer(self, block, width: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != width * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, width * block.expansion, stride),
                                       nn.BatchNorm2d(width * block.expansion))
        layers = [block(self.inplanes, width, stride, downsample, previous)]
        self.inplanes = width * block.expansion
        layers += [block(self.inplanes, width, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features [stem, layer1, layer2, layer3, layer4] (channels in `self.channels`)."""
        s = self.stem(x)
        f1 = self.layer1(self.maxpool(s))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [s, f1, f2, f3, self.layer4(f3)]

    def load_pretrained(self, path: str | Path) -> None:
        """Load an ImageNet state dict saved by torchvision/timm (strict: every key and shape must match, except the
        classifier's `fc.*`, which is dropped)."""
        load_module_from_file(self, path, strict=True)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float (B, 3, H, W) -> ImageNet-normalised float."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
