"""The monocular student of CMKD / HSRDN (METHODS.md section 3).

image -> ResNet (DeepLabV3-style dilated last stages, output stride 8, torchvision names) -> a depth head
(LID bins + one out-of-range bin) and a 1x1 reduction to `frustum_channels` -> frustum features softmax(depth) x
features -> trilinear sampling at the voxel centres of a grid whose x / y cells are the **teacher's BEV cells**
-> Z collapsed into a `bev_channels` map -> the teacher's BEV backbone and anchor head (same class, initialised
from the teacher's weights by the recipe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xmkd.models.det.frustum import frustum_features, frustum_to_voxels, voxel_centres
from xmkd.models.det.second import BEVDetector, SecondConfig
from xmkd.models.image.resnet import ResNet, normalize_images


@dataclass
class MonoConfig:
    depth: str = "resnet50"
    dilate: list[bool] | None = None  # default (False, True, True): output stride 8
    depth_bins: int = 120
    depth_min: float = 2.0
    depth_max: float = 46.8
    frustum_channels: int = 64
    grid_z: int = 10  # voxels along z of the lifting grid (over the point range's height)
    image_pretrained: str = ""


def dilation(cfg: MonoConfig) -> tuple[bool, bool, bool]:
    """The ResNet's dilated stages (functions, not methods: recipes pass OmegaConf nodes of MonoConfig)."""
    return tuple(cfg.dilate) if cfg.dilate is not None else (False, True, True)


def output_stride(cfg: MonoConfig) -> int:
    """Pixels per cell of the backbone's last feature map (8 with the default dilation)."""
    return 32 // (2 ** sum(dilation(cfg)))


class MonoDetector(nn.Module):
    def __init__(self, cfg: MonoConfig, det_cfg: SecondConfig, num_anchors: int, num_classes: int,
                 point_range: Sequence[float], bev_grid: tuple[int, int]):
        """`bev_grid` = (ny, nx): the teacher's BEV map size, so the two maps align cell for cell."""
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(cfg.depth, dilate=dilation(cfg))
        if cfg.image_pretrained:
            self.backbone.load_pretrained(cfg.image_pretrained)
        self.stride = output_stride(cfg)
        cin = self.backbone.channels[4]
        self.depth_head = nn.Sequential(nn.Conv2d(cin, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
                                        nn.Conv2d(256, cfg.depth_bins + 1, 1))
        self.reduce = nn.Sequential(nn.Conv2d(cin, cfg.frustum_channels, 1, bias=False),
                                    nn.BatchNorm2d(cfg.frustum_channels), nn.ReLU())
        self.point_range = list(point_range)
        self.grid = (cfg.grid_z, *bev_grid)
        self.collapse = nn.Sequential(nn.Conv2d(cfg.frustum_channels * cfg.grid_z, det_cfg.bev_channels, 1, bias=False),
                                      nn.BatchNorm2d(det_cfg.bev_channels), nn.ReLU())
        self.bev = BEVDetector(det_cfg, num_anchors, num_classes)
        self.register_buffer("centres", voxel_centres(self.point_range, self.grid), persistent=False)

    def bev_features(self, images: torch.Tensor, lidar_to_image: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) uint8 or float; lidar_to_image (B, 3, 4) = K [R | t] at the image's resolution."""
        feats = self.backbone(normalize_images(images))[4]
        depth_logits = self.depth_head(feats)
        frustum = frustum_features(self.reduce(feats), depth_logits)
        voxels = frustum_to_voxels(frustum, self.centres, lidar_to_image, float(self.stride), self.cfg.depth_min,
                                   self.cfg.depth_max)  # (B, C, Z, Y, X)
        b, c, z, y, x = voxels.shape
        return {"bev": self.collapse(voxels.reshape(b, c * z, y, x)), "depth_logits": depth_logits}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.bev_features(batch["images"], batch["lidar_to_image"])
        return {**out, **self.bev(out["bev"])}
