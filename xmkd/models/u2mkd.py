"""U2MKD's LiDAR + camera student (METHODS.md section 1): the sparse U-Net (point branch, SphereFormer) and a
SwiftNet-ResNet18 camera branch, fused in both directions after each of the 4 encoder stages (L2C into the
ResNet, C2L into the voxels), with a point head (the U-Net decoder) and a dense pixel head (the SwiftNet
decoder over the fused image skips)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xmkd.models.fusion import CameraToLidar, LidarToCamera
from xmkd.models.image.swiftnet import SwiftNet
from xmkd.models.point.sparse_unet import SparseUNet, SparseUNetConfig


class U2MKDStudent(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, backbone: SparseUNetConfig, image_depth: str = "resnet18",
                 image_stem_stride: int = 2, decoder_width: int = 128):
        super().__init__()
        self.lidar = SparseUNet(in_channels, num_classes, backbone)
        self.camera = SwiftNet(num_classes, decoder_width, image_depth, image_stem_stride)
        cs, ci = self.lidar.widths, self.camera.backbone.channels
        self.l2c = nn.ModuleList(LidarToCamera(cs[i + 1], ci[i + 1]) for i in range(4))
        self.c2l = nn.ModuleList(CameraToLidar(cs[i + 1], ci[i + 1]) for i in range(4))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """batch: the sparse U-Net's inputs plus `images` (n_img, 3, H, W) normalised, `point_image` (N,) image
        index of each point (-1: in no camera) and `point_uv` (N, 2) its pixel at full resolution."""
        images = batch["images"]
        full = (images.shape[-1], images.shape[-2])
        pimg, puv = batch["point_image"], batch["point_uv"]
        rn = self.camera.backbone
        stem = rn.stem(images)
        state = {"img": rn.maxpool(stem)}
        skips = [stem]
        imputation = []
        layers = (rn.layer1, rn.layer2, rn.layer3, rn.layer4)

        def hook(i: int, x, point_idx: torch.Tensor):
            img_i = layers[i](state["img"])
            pts = x.features[point_idx]
            fused_img = self.l2c[i](img_i, pts, pimg, puv, full)
            fused_pts, imp = self.c2l[i](pts, img_i, pimg, puv, full)
            imputation.append(imp)
            skips.append(fused_img)
            state["img"] = F.relu(fused_img)
            return self.lidar.to_voxels(x, point_idx, fused_pts)

        out = self.lidar(batch, stage_hook=hook)
        pixel = self.camera.head(self.camera.decode(skips))
        pixel = F.interpolate(pixel, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return {"point_logits": out["logits"], "pixel_logits": pixel, "bottleneck": out["bottleneck"],
                "imputation": torch.stack(imputation).sum()}


def pixel_logits_at_points(pixel_logits: torch.Tensor, point_image: torch.Tensor, point_uv: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the pixel head at each in-view point's pixel (floor of its projection): (P, C) and the mask."""
    vis = point_image >= 0
    h, w = pixel_logits.shape[-2:]
    cols = point_uv[vis, 0].long().clamp(0, w - 1)
    rows = point_uv[vis, 1].long().clamp(0, h - 1)
    return pixel_logits[point_image[vis], :, rows, cols], vis
