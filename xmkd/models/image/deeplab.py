"""DeepLabV3's ASPP classifier with torchvision's module names, and the split of the image weights the CMKD / HSRDN
student starts from: a torchvision `deeplabv3_resnet50` state dict (the COCO-pretrained file
`deeplabv3_resnet50_coco-cd0a2569.pth` the releases load, `ffn/ddn/ddn_template.py:57-84`) or a plain ImageNet
ResNet state dict. Nothing is downloaded: the user gives the file.

`DeepLabHead(cin, classes)` = torchvision's `segmentation.deeplabv3.DeepLabHead`: ASPP (a 1x1 branch, three 3x3
branches dilated 12 / 24 / 36, an image-pooling branch; each `channels` wide, concatenated and projected by a 1x1
conv, dropout 0.5) -> 3x3 conv -> BN -> ReLU -> 1x1 conv to `classes`. Its state-dict keys are those under
`classifier.` in a torchvision DeepLabV3 checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xmkd.errors import XmkdError
from xmkd.models.image.resnet import ResNet


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = dilation if kernel == 3 else 0
    return [nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class ASPPPooling(nn.Sequential):
    """The image-pooling branch. Its BatchNorm sees one value per channel and sample, so a training batch of one
    sample has no batch statistics (torchvision raises there): that batch is normalised with the running ones."""

    def __init__(self, cin: int, channels: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self[1](self[0](x))
        bn = self[2]
        if self.training and x.shape[0] == 1:
            pooled = F.batch_norm(pooled, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            pooled = bn(pooled)
        return F.interpolate(self[3](pooled), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, cin: int, rates: Sequence[int] = (12, 24, 36), channels: int = 256):
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(cin, channels))]
        branches += [nn.Sequential(*_conv_bn_relu(cin, channels, 3, r)) for r in rates]
        branches.append(ASPPPooling(cin, channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*_conv_bn_relu(len(branches) * channels, channels), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.convs], 1))


class DeepLabHead(nn.Sequential):
    """(B, cin, H, W) -> (B, classes, H, W) logits; keys as torchvision's `classifier.*`."""

    def __init__(self, cin: int, classes: int, channels: int = 256, rates: Sequence[int] = (12, 24, 36)):
        super().__init__(ASPP(cin, rates, channels), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, classes, 1))


def image_weights(state: dict[str, torch.Tensor], backbone: ResNet, head: nn.Module | None, source: str
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, list[str]]:
    """Split an image state dict into the ResNet's and the depth head's weights.

    - a torchvision DeepLabV3 state dict (keys `backbone.*`, `classifier.*`, optionally `aux_classifier.*`): every
      `backbone.*` weight is the ResNet's (its ImageNet `fc` stays as initialised: DeepLab has none);
      `classifier.*` is the head's when it is a `DeepLabHead`, except the last 1x1 conv (`classifier.4.*`) when its
      class count differs, which stays freshly initialised (as the releases' `filter_pretrained_dict` does);
      `aux_classifier.*` is not used (the releases build DeepLabV3 without it);
    - otherwise a plain ImageNet ResNet state dict, all of it the ResNet's (loaded strictly by the caller).

    Returns (ResNet state dict, head state dict or None, the file's keys left unused). Raises `XmkdError` naming
    `source` and the keys when a DeepLab file lacks part of the ResNet.
    """
    if not any(k.startswith("backbone.") for k in state):
        return dict(state), None, []
    resnet = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    own = backbone.state_dict()
    missing = sorted(k for k in own if k not in resnet and not k.startswith("fc."))
    if missing:
        raise XmkdError(f"{source}: DeepLabV3 backbone weights do not fit ResNet {backbone.depth}: missing "
                        f"{', '.join('backbone.' + k for k in missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    resnet = {**{k: v for k, v in own.items() if k.startswith("fc.")}, **resnet}
    skipped = [k for k in state if k.startswith("aux_classifier.")]
    classifier = {k[len("classifier."):]: v for k, v in state.items() if k.startswith("classifier.")}
    if not (isinstance(head, DeepLabHead) and classifier):
        return resnet, None, skipped + [f"classifier.{k}" for k in classifier]
    mine = head.state_dict()
    if "4.weight" in classifier and classifier["4.weight"].shape != mine["4.weight"].shape:
        skipped += ["classifier.4.weight", "classifier.4.bias"]
        classifier = {**classifier, "4.weight": mine["4.weight"], "4.bias": mine["4.bias"]}
    return resnet, classifier, skipped
