"""Sparse voxel U-Net of SPVCNN's layout on spconv, with its point branch and optional SphereFormer blocks.

Layout (METHODS.md): a stem of two 3x3x3 submanifold convolutions; 4 encoder stages (a stride-2 convolution,
then `blocks` residual blocks; voxel strides 2, 4, 8, 16), each followed by a SphereFormer block when enabled;
4 decoder stages (transposed convolution back onto the encoder's voxels, skip concatenation, residual
blocks); a point branch that devoxelises stage features to the points (nearest voxel), adds point-wise MLPs
of the previous point features, and re-voxelises (scatter mean) — after the stem, the encoder and decoder
stages 2 and 4, as SPVCNN; and a linear classifier on the final point features.
Widths are `[32, 32, 64, 128, 256, 256, 128, 96, 96] x cr`. All convolutions are bias-free and followed by
BatchNorm (spconv's CPU path cannot run a biased sparse conv in eval mode).

Input: a batch dict with `voxel_coords` (M, 4) int (batch, x, y, z) at stride 1, `voxel_features` (M, C),
`point_voxel` (N,) the stride-1 voxel of each point, `voxel_xyz` (M, 3) voxel centres in metres (LiDAR frame,
for the SphereFormer windows), `spatial_shape` (3,), `batch_size`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xmkd.models.point.sphereformer import SphereFormerBlock
from xmkd.ops.sparse import lookup, sparse_tensor, spconv_module

BASE_WIDTHS = (32, 32, 64, 128, 256, 256, 128, 96, 96)


@dataclass
class SparseUNetConfig:
    cr: float = 1.0  # width ratio
    blocks: int = 2  # residual blocks per stage
    sphereformer: bool = True
    heads: int = 4
    window: float = 1.0  # cubic window edge, metres, at stride 2 (doubles with every stage)
    radial: list[float] = field(default_factory=lambda: [2.0, 2.0, 20.0])  # deg, deg, metres (stride 2)
    chunk: int = 48  # max tokens attended together
    drop_path: float = 0.1
    dropout: float = 0.3  # on the voxel features before the decoder (SPVCNN)


def _bn(c: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(c, eps=1e-3, momentum=0.1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, key: str):
        super().__init__()
        sp = spconv_module()
        self.net = sp.SparseSequential(
            sp.SubMConv3d(cin, cout, 3, bias=False, indice_key=key), _bn(cout), nn.ReLU(inplace=True),
            sp.SubMConv3d(cout, cout, 3, bias=False, indice_key=key), _bn(cout))
        self.skip = None if cin == cout else sp.SparseSequential(sp.SubMConv3d(cin, cout, 1, bias=False,
                                                                              indice_key=key + "_proj"), _bn(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.net(x)
        identity = x if self.skip is None else self.skip(x)
        return out.replace_feature(self.relu(out.features + identity.features))


class PointMLP(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Linear(cin, cout, bias=False), _bn(cout), nn.ReLU(inplace=True))


class SparseUNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, cfg: SparseUNetConfig | None = None):
        super().__init__()
        cfg = cfg or SparseUNetConfig()
        self.cfg = cfg
        cs = [max(8, int(round(c * cfg.cr))) for c in BASE_WIDTHS]
        self.widths = cs
        sp = spconv_module()
        self.stem = sp.SparseSequential(
            sp.SubMConv3d(in_channels, cs[0], 3, bias=False, indice_key="s1"), _bn(cs[0]), nn.ReLU(inplace=True),
            sp.SubMConv3d(cs[0], cs[0], 3, bias=False, indice_key="s1"), _bn(cs[0]), nn.ReLU(inplace=True))
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        for i in range(4):
            self.down.append(sp.SparseSequential(
                sp.SparseConv3d(cs[i], cs[i], 2, stride=2, bias=False, indice_key=f"down{i + 1}"), _bn(cs[i]),
                nn.ReLU(inplace=True)))
            self.enc.append(nn.ModuleList(ResBlock(cs[i] if b == 0 else cs[i + 1], cs[i + 1], f"s{2 ** (i + 1)}")
                                          for b in range(cfg.blocks)))
        self.former = nn.ModuleList(
            SphereFormerBlock(cs[i + 1], cfg.heads, 4.0, cfg.drop_path, cfg.window * 2 ** i,
                              (torch.pi / 180 * cfg.radial[0] * 2 ** i, torch.pi / 180 * cfg.radial[1] * 2 ** i,
                               cfg.radial[2] * 2 ** i), cfg.chunk) if cfg.sphereformer else nn.Identity()
            for i in range(4))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for j in range(4):  # decoder stage j brings stride 2^(4-j) back to 2^(3-j)
            cin, cskip, cout = cs[4 + j], cs[3 - j], cs[5 + j]
            self.up.append(sp.SparseSequential(
                sp.SparseInverseConv3d(cin, cout, 2, bias=False, indice_key=f"down{4 - j}"), _bn(cout),
                nn.ReLU(inplace=True)))
            self.dec.append(nn.ModuleList(ResBlock(cout + cskip if b == 0 else cout, cout, f"s{2 ** (3 - j)}")
                                          for b in range(cfg.blocks)))
        self.point_mlp = nn.ModuleList([PointMLP(cs[0], cs[4]), PointMLP(cs[4], cs[6]), PointMLP(cs[6], cs[8])])
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cs[8], num_classes)

    # -- point <-> voxel --------------------------------------------------------------------------------------
    @staticmethod
    def point_coords(batch: dict[str, Any]) -> torch.Tensor:
        return batch["voxel_coords"][batch["point_voxel"]]

    @staticmethod
    def voxel_of_points(x, point_coords: torch.Tensor, stride: int) -> torch.Tensor:
        """Index in the sparse tensor `x` (at `stride`) of each point's voxel."""
        q = point_coords.clone()
        q[:, 1:] = torch.div(q[:, 1:], stride, rounding_mode="floor")
        idx = lookup(q, x.indices)
        if (idx < 0).any():
            raise RuntimeError("a point has no voxel at this stride (voxel coordinates and tensor disagree)")
        return idx

    @staticmethod
    def to_points(x, idx: torch.Tensor) -> torch.Tensor:
        return x.features[idx]

    @staticmethod
    def to_voxels(x, idx: torch.Tensor, point_features: torch.Tensor):
        """Replace the tensor's features by the mean of its points' features."""
        out = torch.zeros((x.features.shape[0], point_features.shape[1]), dtype=point_features.dtype,
                          device=point_features.device)
        out.index_add_(0, idx, point_features)
        count = torch.bincount(idx, minlength=out.shape[0]).clamp(min=1).unsqueeze(1).to(out.dtype)
        return x.replace_feature(out / count)

    def voxel_xyz(self, x, batch: dict[str, Any], stride: int) -> torch.Tensor:
        size = batch["voxel_size"].to(x.features.dtype)
        origin = batch["origin"].to(x.features.dtype)
        return (x.indices[:, 1:].to(x.features.dtype) + 0.5) * size * stride + origin

    # -- network ---------------------------------------------------------------------------------------------
    def input_tensor(self, batch: dict[str, Any]):
        return sparse_tensor(batch["voxel_features"], batch["voxel_coords"], batch["spatial_shape"],
                             int(batch["batch_size"]))

    def encode_stage(self, i: int, x, batch: dict[str, Any]):
        """Encoder stage i (0..3): stride 2^(i+1)."""
        x = self.down[i](x)
        for block in self.enc[i]:  # plain ModuleLists: spconv's SparseSequential only chains its own modules
            x = block(x)
        if self.cfg.sphereformer:
            xyz = self.voxel_xyz(x, batch, 2 ** (i + 1))
            x = x.replace_feature(self.former[i](x.features, xyz, x.indices[:, 0]))
        return x

    def forward(self, batch: dict[str, Any], stage_hook=None) -> dict[str, torch.Tensor]:
        """Point logits (N, classes), final point features, the bottleneck voxel features, and the 4 encoder stage
        tensors. `stage_hook(i, x, point_idx)` may replace encoder stage i's output (cross-modal fusion)."""
        pc = self.point_coords(batch)
        x0 = self.stem(self.input_tensor(batch))
        idx0 = batch["point_voxel"]
        z0 = self.to_points(x0, idx0)
        skips = [x0]
        x = x0
        for i in range(4):
            x = self.encode_stage(i, x, batch)
            if stage_hook is not None:
                x = stage_hook(i, x, self.voxel_of_points(x, pc, 2 ** (i + 1)))
            skips.append(x)
        idx4 = self.voxel_of_points(x, pc, 16)
        z1 = self.to_points(x, idx4) + self.point_mlp[0](z0)
        bottleneck = z1
        y = self.to_voxels(x, idx4, z1)
        y = y.replace_feature(self.dropout(y.features))
        z = z1
        for j in range(4):
            y = self.up[j](y)
            skip = skips[3 - j]
            y = y.replace_feature(torch.cat([y.features, skip.features], 1))
            for block in self.dec[j]:
                y = block(y)
            if j in (1, 3):
                stride = 2 ** (3 - j)
                idx = self.voxel_of_points(y, pc, stride)
                z = self.to_points(y, idx) + self.point_mlp[1 if j == 1 else 2](z)
                if j == 1:
                    y = self.to_voxels(y, idx, z)
                    y = y.replace_feature(self.dropout(y.features))
        return {"logits": self.classifier(z), "point_features": z, "bottleneck": bottleneck, "stages": skips[1:]}
