"""U2MKD's LiDAR + camera student (METHODS.md section 1), as released (`SPVCNN_SWIFTNET18_SPFORMER_MSP2IFM` in
core/models/nuscenes/spvcnn_swiftnet18_spformer_tsd_full.py of github:isunLt/U2MKD @ d8dfa69): the sparse
U-Net (point branch, SphereFormer) and a SwiftNet-ResNet18 camera branch, fused in both directions after each
of the 4 encoder stages, with a point head (the U-Net decoder) and a dense pixel head (the SwiftNet decoder
over the fused image features).

Per encoder stage i (0..3): the LiDAR stage output is devoxelised to the points (p; the stride-1 voxels, each
at its first point's pixel, as the release's representative points); the ResNet stage runs on
the previous fused image features and yields its pre-activation output (SwiftNet's `skip`); at stage 4 that
goes through the SPP first (so fusion there is on the 128-channel SPP output); L2C (4 - i scales) fuses p into
it, giving the next ResNet input ReLU(fused) and the decoder's skip `fused`; C2L samples `fused` at the points
and fuses it into p; the fused point features are re-voxelised (scatter mean) for the next stage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xmkd.models.fusion import CameraToLidar, LidarToCamera
from xmkd.models.image.resnet import run_layer
from xmkd.models.image.swiftnet import SwiftNet
from xmkd.models.point.sparse_unet import SparseUNet, SparseUNetConfig


class U2MKDStudent(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, backbone: SparseUNetConfig, image_depth: str = "resnet18",
                 image_stem_stride: int = 2, decoder_width: int = 128, image_pretrained: str = "",
                 pixel_head_at_image: bool = True):
        super().__init__()
        self.lidar = SparseUNet(in_channels, num_classes, backbone)
        # pixel_head_at_image: the release upsamples the decoder features to the image and then runs the pixel head
        # (tsd_full.py:551-556, swiftnet.py forward_up); false: the head at the decoder's resolution, logits upsampled
        self.camera = SwiftNet(num_classes, decoder_width, image_depth, image_stem_stride, pixel_head_at_image)
        if image_pretrained:
            self.camera.backbone.load_pretrained(image_pretrained)
        self.camera.backbone.fc = None  # ImageNet head: only there so the checkpoint loads strictly
        cs, ci = self.lidar.widths, self.camera.backbone.channels
        img = [ci[1], ci[2], ci[3], decoder_width]  # stage 4 fuses on the SPP output
        self.l2c = nn.ModuleList(LidarToCamera(cs[i + 1], img[i], 4 - i) for i in range(4))
        self.c2l = nn.ModuleList(CameraToLidar(cs[i + 1], img[i]) for i in range(4))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """batch: the sparse U-Net's inputs plus `images` (n_img, 3, H, W) float, `point_image` (N,) image index of
        each point (-1: in no camera) and `point_uv` (N, 2) its pixel at full resolution.

        Returns point logits (N, classes), pixel logits (n_img, classes, H, W), `stage4` (N, widths[4]) the
        stage-4 LiDAR point features before fusion (the feature-imitation input) and the summed imputation loss."""
        images = batch["images"]
        full = (images.shape[-1], images.shape[-2])
        # the LiDAR branch's points are the stride-1 voxels: each takes its first point's pixel (the release's
        # representative point)
        pv = batch["point_voxel"]
        first = torch.full((len(batch["voxel_coords"]),), len(pv), dtype=torch.long, device=pv.device)
        first = first.scatter_reduce(0, pv, torch.arange(len(pv), device=pv.device), "amin")
        pimg, puv = batch["point_image"][first], batch["point_uv"][first]
        rn = self.camera.backbone
        state = {"img": rn.maxpool(rn.stem(images))}
        skips: list[torch.Tensor] = []
        imputation = []
        layers = (rn.layer1, rn.layer2, rn.layer3, rn.layer4)

        def hook(i: int, x, pts: torch.Tensor, voxel_idx: torch.Tensor):
            _, skip = run_layer(layers[i], state["img"])
            if i == 3:
                skip = self.camera.spp(skip)
            state["img"], fused_img = self.l2c[i](skip, pts, pimg, puv, full)
            fused_pts, imp = self.c2l[i](pts, fused_img, pimg, puv, full)
            imputation.append(imp)
            skips.append(fused_img)
            return self.lidar.to_voxels(x, voxel_idx, fused_pts), fused_pts

        out = self.lidar(batch, stage_hook=hook)
        pixel = self.camera.classify(self.camera.ladder(skips[3], skips[:3]), images.shape[-2:])
        return {"point_logits": out["logits"], "pixel_logits": pixel, "stage4": out["stage4"],
                "imputation": torch.stack(imputation).sum()}


def pixel_logits_at_points(pixel_logits: torch.Tensor, point_image: torch.Tensor, point_uv: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the pixel head at each in-view point's pixel (floor of its projection): (P, C) and the mask."""
    vis = point_image >= 0
    h, w = pixel_logits.shape[-2:]
    cols = point_uv[vis, 0].long().clamp(0, w - 1)
    rows = point_uv[vis, 1].long().clamp(0, h - 1)
    return pixel_logits[point_image[vis], :, rows, cols], vis
