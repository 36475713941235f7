"""SECOND, the LiDAR teacher of CMKD / HSRDN (METHODS.md section 3), as CMKD's second_teacher.yaml builds it.

mean VFE (voxel feature = mean of its points, done by `voxel_batch`) -> sparse 3D encoder (`sparse_backbone.py`;
default the residual `VoxelResBackBone8x_c64`: 16 -> 32 -> 64 -> 64 channels at strides 1, 2, 4, 8, then a (1, 1, 3)
conv of stride (1, 1, 2) in z to 64 channels) -> height compression into a BEV map of `bev_channels` (128; the
feature the student imitates) -> BEV backbone (two blocks of 5 convs, 128 / 256 filters, upsampled and concatenated
to 2 x 256) -> anchor head (class logits, residual box codes, direction bins per anchor).

Voxel coordinates are xmkd's (batch, x, y, z); BEV maps are (B, C, ny, nx), rows along y, columns along x, the
layout of `generate_anchors`. With KITTI's 40 voxels in z (+ 1, as the release pads the sparse shape) 2 z cells of
64 channels are left after the encoder, so the BEV map is exactly 2 x 64 = 128 channels, as released.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xmkd.models.det.sparse_backbone import SPARSE_BACKBONES, Z_PAD, z_cells
from xmkd.ops.sparse import sparse_tensor


@dataclass
class SecondConfig:
    backbone: str = "res8x"  # res8x (VoxelResBackBone8x[_c64], the CMKD teacher) | plain8x (VoxelBackBone8x)
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 64])
    out_channels: int = 64  # of the final z-stride conv (64: the release's _c64 variant)
    bev_channels: int = 128
    bev_layers: list[int] = field(default_factory=lambda: [5, 5])
    bev_filters: list[int] = field(default_factory=lambda: [128, 256])
    bev_strides: list[int] = field(default_factory=lambda: [1, 2])
    up_filters: list[int] = field(default_factory=lambda: [256, 256])
    up_strides: list[int] = field(default_factory=lambda: [1, 2])
    bn_momentum: float = 0.01  # OpenPCDet's; short CPU-scale runs use 0.1 so the running statistics catch up


def _bn2d(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3)


def height_compression(x: Any) -> torch.Tensor:
    """Sparse tensor over (X, Y, Z) with C channels -> dense BEV (B, C * Z, Y, X); empty cells are zero.
    (Scattered here rather than through spconv's `dense()`, which relies on deprecated list indexing.)"""
    nx, ny, nz = (int(v) for v in x.spatial_shape)
    feats, idx = x.features, x.indices.long()  # idx: (M, 4) = (batch, x, y, z)
    c = feats.shape[1]
    out = feats.new_zeros(x.batch_size, nz, c, ny, nx)
    out[idx[:, 0], idx[:, 3], :, idx[:, 2], idx[:, 1]] = feats
    return out.permute(0, 2, 1, 3, 4).reshape(x.batch_size, c * nz, ny, nx)


class BEVBackbone(nn.Module):
    def __init__(self, cin: int, cfg: SecondConfig):
        super().__init__()
        self.blocks, self.ups = nn.ModuleList(), nn.ModuleList()
        c = cin
        for layers, filters, stride, up_filters, up_stride in zip(cfg.bev_layers, cfg.bev_filters, cfg.bev_strides,
                                                                  cfg.up_filters, cfg.up_strides):
            mods: list[nn.Module] = [nn.Conv2d(c, filters, 3, stride=stride, padding=1, bias=False), _bn2d(filters),
                                     nn.ReLU()]
            for _ in range(layers):
                mods += [nn.Conv2d(filters, filters, 3, padding=1, bias=False), _bn2d(filters), nn.ReLU()]
            self.blocks.append(nn.Sequential(*mods))
            self.ups.append(nn.Sequential(
                nn.ConvTranspose2d(filters, up_filters, up_stride, stride=up_stride, bias=False), _bn2d(up_filters),
                nn.ReLU()))
            c = filters
        self.out_channels = sum(cfg.up_filters)

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        outs, x = [], bev
        for block, up in zip(self.blocks, self.ups):
            x = block(x)
            outs.append(up(x))
        return torch.cat(outs, 1)


class AnchorHead(nn.Module):
    """Per anchor: class logits (one per class, sigmoid), 7 residual box codes and `dir_bins` direction logits."""

    def __init__(self, cin: int, num_anchors: int, num_classes: int, dir_bins: int = 2):
        super().__init__()
        self.num_anchors, self.num_classes, self.dir_bins = num_anchors, num_classes, dir_bins
        self.cls = nn.Conv2d(cin, num_anchors * num_classes, 1)
        self.box = nn.Conv2d(cin, num_anchors * 7, 1)
        self.dir = nn.Conv2d(cin, num_anchors * dir_bins, 1)
        nn.init.constant_(self.cls.bias, -4.595)  # prior probability 0.01 (focal-loss initialisation)
        nn.init.normal_(self.box.weight, std=0.001)
        nn.init.zeros_(self.box.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, ny, nx) -> cls (B, ny, nx, A, classes), box (B, ny, nx, A, 7), dir (B, ny, nx, A, bins)."""
        b, _, ny, nx = x.shape

        def per_anchor(t: torch.Tensor, k: int) -> torch.Tensor:
            return t.permute(0, 2, 3, 1).reshape(b, ny, nx, self.num_anchors, k)

        return {"cls": per_anchor(self.cls(x), self.num_classes), "box": per_anchor(self.box(x), 7),
                "dir": per_anchor(self.dir(x), self.dir_bins)}


class BEVDetector(nn.Module):
    """The BEV half shared by teacher and student (the student's is initialised from the teacher's)."""

    def __init__(self, cfg: SecondConfig, num_anchors: int, num_classes: int):
        super().__init__()
        self.backbone = BEVBackbone(cfg.bev_channels, cfg)
        self.head = AnchorHead(self.backbone.out_channels, num_anchors, num_classes)

    def forward(self, bev: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(bev))


class Second(nn.Module):
    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, grid_z: int,
                 cfg: SecondConfig | None = None):
        """`grid_z`: voxels along z of the input grid (it fixes the height left after the backbone)."""
        super().__init__()
        cfg = cfg or SecondConfig()
        self.cfg = cfg
        self.vfe_channels = in_channels
        if cfg.backbone not in SPARSE_BACKBONES:
            raise ValueError(f"model.second.backbone: unknown {cfg.backbone!r} ({', '.join(SPARSE_BACKBONES)})")
        self.sparse = SPARSE_BACKBONES[cfg.backbone](in_channels, cfg.widths, cfg.out_channels)
        nz = z_cells(grid_z)
        if nz < 1:
            raise ValueError(f"grid_z={grid_z} voxels is too few for SECOND's 4 z reductions (need >= 24)")
        self.grid_z, self.bev_height = grid_z, nz
        flat = cfg.out_channels * nz
        self.compress = nn.Identity() if flat == cfg.bev_channels else nn.Sequential(
            nn.Conv2d(flat, cfg.bev_channels, 1, bias=False), _bn2d(cfg.bev_channels), nn.ReLU())
        self.bev = BEVDetector(cfg, num_anchors, num_classes)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = cfg.bn_momentum

    def bev_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """The distilled feature: (B, bev_channels, ny / 8, nx / 8)."""
        shape = [int(v) for v in batch["spatial_shape"]]
        shape[2] = self.grid_z + Z_PAD  # the release's grid_size + [1, 0, 0] (z, y, x)
        x = sparse_tensor(batch["voxel_features"], batch["voxel_coords"], shape, int(batch["batch_size"]))
        out, _ = self.sparse(x)
        return self.compress(height_compression(out))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        bev = self.bev_features(batch)
        return {"bev": bev, **self.bev(bev)}
