"""The monocular student of CMKD / HSRDN as released (METHODS.md section 3; `CMKD_MONO` in
`pcdet/models/detectors/cmkd.py` and its `MODEL_IMG` config `cmkd_kitti_R50_scd_V2.yaml`).

image -> ResNet (torchvision names, dilated layer3 / layer4: output stride 8) ->
- depth logits (LID bins + one out-of-range bin) from a DeepLabV3 ASPP head on **layer4** (`depth_head: aspp`,
  the release's `DDNDeepLabV3` classifier; `conv` is a small 3x3-conv head for CPU-scale runs), resized bilinearly
  to the frustum features' size (as released; a no-op when layer4 is dilated to output stride 8 too),
- frustum features from **layer3** (`feature_layer: 3`, the release's `feat_extract_layer`) reduced by a 1x1
  conv + BN + ReLU to `frustum_channels`,
-> frustum = softmax(depth) x features -> trilinear sampling at the voxel centres of a grid whose x / y cells are the
**teacher's BEV cells** (`frustum.frustum_to_voxels`) -> Z collapsed by a 1x1 conv + BN + ReLU into `bev_channels`
-> SCNet (`scnet_blocks` SCBottlenecks, HSRDN's SE gate or CMKD's self-calibration gate; `scnet.py`) = the
**distilled BEV feature** -> the teacher's BEV backbone and anchor head (same class, initialised from the teacher by
the recipe).

`oracle_depth` replaces softmax(depth logits) by LiDAR depth bins, not a monocular detector: with `oracle_bins: cell`
the one-hot LID bin of each feature cell's depth target (the out-of-range bin where a cell has none), with
`histogram` the share of the cell's depth-image pixels in each bin (`frustum.cell_depth_histograms`; xmkd's, for the
upper bound of the lifting where a cell spans several surfaces).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xmkd.models.det.frustum import SAMPLINGS, depth_bin_targets, frustum_features, frustum_to_voxels, voxel_centres
from xmkd.models.det.scnet import GATES, SE_INITS, SCNet
from xmkd.models.det.second import BEVDetector, SecondConfig
from xmkd.models.image.deeplab import DeepLabHead
from xmkd.models.image.resnet import ResNet, normalize_images


@dataclass
class MonoConfig:
    depth: str = "resnet50"
    dilate: list[bool] | None = None  # default (False, True, True): output stride 8
    feature_layer: int = 3  # ResNet stage of the frustum features (the release: layer3; 4 = layer4)
    depth_head: str = "aspp"  # aspp (DeepLabV3's classifier on layer4, as released) | conv (3x3 conv-BN-ReLU + 1x1)
    aspp_channels: int = 256  # torchvision's DeepLabHead width
    depth_bins: int = 120
    depth_min: float = 2.0
    depth_max: float = 46.8
    frustum_channels: int = 64
    grid_z: int = 10  # voxels along z of the lifting grid (over the point range's height)
    sampling: str = "centres"  # centres (the fix) | caddn (the release's frustum-grid normalisation)
    scnet_blocks: int = 4  # the release's NUM_BLOCKS 5 builds 4; 0 = none
    scnet_gate: str = ""  # se (HSRDN) | sc (CMKD); "" = the recipe's own (hsrdn: se, cmkd: sc)
    se_init: str = "fork"  # fork (the SE convs' draws leave the rest's unchanged) | inline (the release's order)
    oracle_depth: bool = False  # LiDAR depth bins instead of predicted ones (an upper bound, not monocular)
    oracle_bins: str = "cell"  # cell (one-hot bin of the cell's depth target) | histogram (its pixels' bin shares)
    image_pretrained: str = ""  # a torchvision deeplabv3_resnet50 or ImageNet ResNet state dict (the recipe loads it)
    init: str = ""  # a hsrdn / cmkd run checkpoint to start the whole student from (the BEV stage before `det`)
    aspp_rates: list[int] = field(default_factory=lambda: [12, 24, 36])


ORACLE_BINS = ("cell", "histogram")


def dilation(cfg: MonoConfig) -> tuple[bool, bool, bool]:
    """The ResNet's dilated stages (functions, not methods: recipes pass OmegaConf nodes of MonoConfig)."""
    return tuple(cfg.dilate) if cfg.dilate is not None else (False, True, True)


def output_stride(cfg: MonoConfig) -> int:
    """Pixels per cell of the frustum features (8 with the default dilation)."""
    halvings = cfg.feature_layer - 1 - sum(dilation(cfg)[: cfg.feature_layer - 1])  # undilated layer2 .. layerL
    return 4 * 2 ** halvings


def check_mono_config(cfg: MonoConfig) -> None:
    """ValueError naming the field when a MonoConfig value is outside what the student supports."""
    if cfg.feature_layer not in (3, 4):
        raise ValueError(f"model.student.feature_layer: expected 3 or 4, got {cfg.feature_layer}")
    if cfg.depth_head not in ("aspp", "conv"):
        raise ValueError(f"model.student.depth_head: expected aspp or conv, got {cfg.depth_head!r}")
    if cfg.sampling not in SAMPLINGS:
        raise ValueError(f"model.student.sampling: expected one of {SAMPLINGS}, got {cfg.sampling!r}")
    if cfg.oracle_bins not in ORACLE_BINS:
        raise ValueError(f"model.student.oracle_bins: expected one of {ORACLE_BINS}, got {cfg.oracle_bins!r}")
    if cfg.scnet_blocks and cfg.scnet_gate not in GATES:
        raise ValueError(f"model.student.scnet_gate: expected one of {GATES}, got {cfg.scnet_gate!r}")
    if cfg.se_init not in SE_INITS:
        raise ValueError(f"model.student.se_init: expected one of {SE_INITS}, got {cfg.se_init!r}")


class MonoDetector(nn.Module):
    def __init__(self, cfg: MonoConfig, det_cfg: SecondConfig, num_anchors: int, num_classes: int,
                 point_range: Sequence[float], bev_grid: tuple[int, int]):
        """`bev_grid` = (ny, nx): the teacher's BEV map size, so the two maps align cell for cell."""
        super().__init__()
        check_mono_config(cfg)
        self.cfg = cfg
        self.backbone = ResNet(cfg.depth, dilate=dilation(cfg))
        self.stride = output_stride(cfg)
        c4, cf = self.backbone.channels[4], self.backbone.channels[cfg.feature_layer]
        if cfg.oracle_depth:
            self.depth_head = None
        elif cfg.depth_head == "aspp":
            self.depth_head = DeepLabHead(c4, cfg.depth_bins + 1, cfg.aspp_channels, cfg.aspp_rates)
        else:
            self.depth_head = nn.Sequential(nn.Conv2d(c4, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                                            nn.ReLU(), nn.Conv2d(256, cfg.depth_bins + 1, 1))
        self.reduce = nn.Sequential(nn.Conv2d(cf, cfg.frustum_channels, 1, bias=False),
                                    nn.BatchNorm2d(cfg.frustum_channels), nn.ReLU())
        self.point_range = list(point_range)
        self.grid = (cfg.grid_z, *bev_grid)
        self.collapse = nn.Sequential(nn.Conv2d(cfg.frustum_channels * cfg.grid_z, det_cfg.bev_channels, 1, bias=False),
                                      nn.BatchNorm2d(det_cfg.bev_channels), nn.ReLU())
        self.scnet = (SCNet(det_cfg.bev_channels, cfg.scnet_blocks, cfg.scnet_gate, cfg.se_init) if cfg.scnet_blocks
                      else None)
        self.bev = BEVDetector(det_cfg, num_anchors, num_classes)
        self.freeze_head = False  # the BEV stage: the BEV backbone + head neither learn nor update BN statistics
        self.register_buffer("centres", voxel_centres(self.point_range, self.grid), persistent=False)

    def set_head_frozen(self, frozen: bool) -> None:
        """Freeze (or release) the BEV backbone + anchor head: no gradients, and eval mode whatever `train()` asks."""
        self.freeze_head = frozen
        self.bev.requires_grad_(not frozen)
        self.bev.train(self.training and not frozen)

    def train(self, mode: bool = True) -> MonoDetector:
        super().train(mode)
        if self.freeze_head:
            self.bev.eval()
        return self

    def bev_features(self, images: torch.Tensor, lidar_to_image: torch.Tensor,
                     cell_depth: torch.Tensor | None = None, depth_shares: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) uint8 or float; lidar_to_image (B, 3, 4) = K [R | t] at the image's resolution;
        cell_depth (B, Hf, Wf) metres per feature cell, 0 where unknown (needed by `oracle_depth` with
        `oracle_bins: cell` only); depth_shares (B, D + 1, Hf, Wf) per cell and LID bin (`cell_depth_histograms`;
        needed by `oracle_bins: histogram` only). ValueError when the oracle's input is missing.
        Returns the distilled BEV map `bev` (B, bev_channels, ny, nx) and `depth_logits` (B, D + 1, Hf, Wf)
        (absent with `oracle_depth`)."""
        r = self.backbone
        feats = {3: r.layer3(r.layer2(r.layer1(r.maxpool(r.stem(normalize_images(images))))))}
        if self.depth_head is not None or self.cfg.feature_layer == 4:  # the oracle at layer3 needs no layer4
            feats[4] = r.layer4(feats[3])
        image = self.reduce(feats[self.cfg.feature_layer])
        out: dict[str, torch.Tensor] = {}
        if self.depth_head is None:
            c = self.cfg
            if c.oracle_bins == "histogram":
                if depth_shares is None:
                    raise ValueError("MonoDetector: oracle_bins 'histogram' needs the batch's per-cell LiDAR depth "
                                     "bin shares ('depth_shares')")
                probs = depth_shares.to(image.dtype)
            else:
                if cell_depth is None:
                    raise ValueError("MonoDetector: oracle_depth needs the batch's per-cell LiDAR depth ('depth')")
                bins = depth_bin_targets(cell_depth, c.depth_min, c.depth_max, c.depth_bins)  # 0 m: out of range
                probs = F.one_hot(bins, c.depth_bins + 1).permute(0, 3, 1, 2).to(image.dtype)
            frustum = image[:, :, None] * probs[:, None, :-1]
        else:
            logits = self.depth_head(feats[4])
            out["depth_logits"] = F.interpolate(logits, size=image.shape[2:], mode="bilinear", align_corners=False)
            frustum = frustum_features(image, out["depth_logits"])
        h, w = images.shape[2:]
        voxels = frustum_to_voxels(frustum, self.centres, lidar_to_image, float(self.stride), self.cfg.depth_min,
                                   self.cfg.depth_max, self.cfg.sampling, (w, h))  # (B, C, Z, Y, X)
        b, c, z, y, x = voxels.shape
        bev = self.collapse(voxels.reshape(b, c * z, y, x))
        out["bev"] = self.scnet(bev) if self.scnet is not None else bev
        return out

    def forward(self, batch: dict[str, Any], head: bool = True) -> dict[str, torch.Tensor]:
        """`bev_features` of the batch's images, plus (with `head`) the anchor outputs cls (B, ny, nx, A, classes),
        box (B, ny, nx, A, 7), dir (B, ny, nx, A, bins); the BEV stage trains without them."""
        out = self.bev_features(batch["images"], batch["lidar_to_image"], batch.get("depth"), batch.get("depth_shares"))
        return {**out, **self.bev(out["bev"])} if head else out
