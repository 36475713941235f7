"""Sparse voxel U-Net of SPVCNN's layout on spconv, with its point branch and SphereFormer blocks, as U2MKD
releases it (`SPVCNN_SPFORMER` in core/models/nuscenes/spvcnn_swiftnet18_spformer_tsd_full.py of
github:isunLt/U2MKD @ d8dfa69; the same LiDAR branch in its student).

Layout (METHODS.md): a stem of two 3x3x3 submanifold convolutions; 4 encoder stages (a stride-2 convolution,
then `blocks` residual blocks; voxel strides 2, 4, 8, 16), each followed by a SphereFormer block (sphereformer.py:
head dim 16, cubic window `window` m and radial window `radial` at the first block, the cubic edge and the two
angles doubling per stage, the range fixed; drop path linspace(0, `drop_path`, 7)[1..4]); 4 decoder stages
(transposed convolution back onto the encoder's voxels, skip concatenation, residual blocks); a point branch
that devoxelises stage features to the points (**trilinear** over the 8 neighbouring voxels, torchsparse's
`voxel_to_point(nearest=False)`, or nearest voxel), adds point-wise MLPs (Linear + BN + ReLU) of the previous
point features, and re-voxelises (scatter mean) — after the stem, the encoder and decoder stages 2 and 4, as
SPVCNN; and a linear classifier on the final point features.
Widths are `[32, 32, 64, 128, 256, 256, 128, 96, 96] x cr`. All convolutions are bias-free and followed by
BatchNorm (spconv's CPU path cannot run a biased sparse conv in eval mode; torchsparse's are bias-free too).

The point branch runs on the stride-1 voxels, at their integer coordinates, as in the release (whose points
are the voxels' representatives with rounded coordinates); every point takes its stride-1 voxel's outputs (the
release's inverse map). The SphereFormer positions of a stage's voxels are the mean of the mean point positions of the
stride-1 voxels inside them (the release's `point_to_voxel(vox_out, zz)` on the input xyz).

Input: a batch dict with `voxel_coords` (M, 4) int (batch, x, y, z) at stride 1, `voxel_features` (M, C),
`voxel_xyz` (M, 3) mean position of each voxel's points in metres (LiDAR frame; voxel centres when absent),
`point_voxel` (N,) the stride-1 voxel of each point, `spatial_shape` (3,), `batch_size`, `origin`, `voxel_size`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xmkd.errors import XmkdConfigError
from xmkd.models.point.sphereformer import QUANT_STEPS, SphereFormerBlock
from xmkd.ops.sparse import lookup, sparse_tensor, spconv_module

BASE_WIDTHS = (32, 32, 64, 128, 256, 256, 128, 96, 96)


@dataclass
class SparseUNetConfig:
    """Defaults are the release's (ours_star.yaml / spformer.yaml; `window` = voxel 0.05 x patch 1 x window 6)."""

    cr: float = 1.0  # width ratio
    blocks: int = 2  # residual blocks per stage
    sphereformer: bool = True
    head_dim: int = 16  # SphereFormer heads = stage width // head_dim (half cubic, half radial)
    window: float = 0.3  # cubic window edge (m) at the first block (stride 2); doubles with every stage
    radial: list[float] = field(default_factory=lambda: [2.0, 2.0, 120.0])  # deg, deg, m at the first block;
    # the two angles double with every stage, the range stays
    radial_quant_shared: bool = True  # release: the 4 blocks share one angular RPE quantum, 16x the first
    # block's (its in-place doubling of one numpy array); false = each block's own window / 24
    rpe_a: float = 0.0125  # m, the exponential range split of the radial RPE
    drop_path: float = 0.3  # block i (1..4) gets linspace(0, drop_path, 7)[i]
    dropout: float = 0.3  # on the voxel features before the decoder (SPVCNN)
    devoxelize: str = "trilinear"  # trilinear (release) | nearest


def _bn(c: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(c)  # eps 1e-5, momentum 0.1: torchsparse's spnn.BatchNorm


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
        super().__init__(nn.Linear(cin, cout), _bn(cout), nn.ReLU(inplace=True))


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
        if cfg.devoxelize not in ("trilinear", "nearest"):
            raise XmkdConfigError(f"backbone.devoxelize: {cfg.devoxelize!r} is not one of trilinear, nearest")
        self.former = nn.ModuleList(self._former(i, cs[i + 1]) if cfg.sphereformer else nn.Identity()
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

    def _former(self, i: int, dim: int) -> SphereFormerBlock:
        """SphereFormer block after encoder stage i (0..3), sized as the release's `transformer_blocks[i]`."""
        cfg = self.cfg
        heads = dim // cfg.head_dim
        if heads < 2:
            raise XmkdConfigError(f"backbone.head_dim={cfg.head_dim} leaves encoder stage {i + 1} ({dim} channels) "
                                  f"with {heads} SphereFormer head(s); it needs at least 2 (half cubic, half radial)")
        scale = 2 ** i
        r = cfg.radial
        radial = (r[0] * scale, r[1] * scale, r[2])
        quant = (r[0] * 16 / QUANT_STEPS, r[1] * 16 / QUANT_STEPS, r[2] / QUANT_STEPS) \
            if cfg.radial_quant_shared else None
        drop = float(torch.linspace(0, cfg.drop_path, 7)[i + 1])
        return SphereFormerBlock(dim, heads, drop, cfg.window * scale, radial, quant, cfg.rpe_a)

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

    def devoxelize(self, x, point_coords: torch.Tensor, stride: int) -> torch.Tensor:
        """Point features (N, C) from the sparse tensor `x` at `stride`: trilinear over the 8 voxels around each
        point's stride-1 voxel corner (release `voxel_to_point(nearest=False)`: weights from the position inside
        the stride-`stride` cell, missing voxels dropped and the rest renormalised), or its own voxel (nearest)."""
        if self.cfg.devoxelize == "nearest" or stride == 1:  # integer coordinates: trilinear = nearest at stride 1
            return x.features[self.voxel_of_points(x, point_coords, stride)]
        pc = point_coords.long()
        base = torch.div(pc[:, 1:], stride, rounding_mode="floor")
        frac = (pc[:, 1:] - base * stride).to(x.features.dtype) / stride
        offsets = torch.tensor([[(o >> 2) & 1, (o >> 1) & 1, o & 1] for o in range(8)], device=pc.device)
        query = torch.cat([pc[:, :1].repeat(8, 1), (base[None] + offsets[:, None]).reshape(-1, 3)], 1)
        idx = lookup(query, x.indices).view(8, -1)
        w = torch.where(offsets[:, None].bool(), frac[None], 1 - frac[None]).prod(-1) * (idx >= 0)
        w = w / (w.sum(0, keepdim=True) + 1e-8)
        idx = idx.clamp(min=0)
        out = x.features[idx[0]] * w[0, :, None]
        for o in range(1, 8):  # one (N, C) term at a time: the 8 neighbours together would take 8x the memory
            out = out + x.features[idx[o]] * w[o, :, None]
        return out

    @staticmethod
    def to_voxels(x, idx: torch.Tensor, point_features: torch.Tensor):
        """Replace the tensor's features by the mean of its points' features."""
        out = torch.zeros((x.features.shape[0], point_features.shape[1]), dtype=point_features.dtype,
                          device=point_features.device)
        out.index_add_(0, idx, point_features)
        count = torch.bincount(idx, minlength=out.shape[0]).clamp(min=1).unsqueeze(1).to(out.dtype)
        return x.replace_feature(out / count)

    def voxel_xyz(self, x, batch: dict[str, Any], stride: int) -> torch.Tensor:
        """(M_s, 3) position of each voxel of `x` (at `stride`) in metres: the mean of its stride-1 voxels'
        `voxel_xyz` (release), or its centre when the batch has no `voxel_xyz`."""
        dtype = x.features.dtype
        if "voxel_xyz" not in batch:
            size, origin = batch["voxel_size"].to(dtype), batch["origin"].to(dtype)
            return (x.indices[:, 1:].to(dtype) + 0.5) * size * stride + origin
        idx = self.voxel_of_points(x, batch["voxel_coords"], stride)
        out = torch.zeros((x.features.shape[0], 3), dtype=dtype, device=x.features.device)
        out.index_add_(0, idx, batch["voxel_xyz"].to(dtype))
        return out / torch.bincount(idx, minlength=out.shape[0]).clamp(min=1).unsqueeze(1).to(dtype)

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

    def forward(self, batch: dict[str, Any], stage_hook=None) -> dict[str, Any]:
        """Point logits (N, classes), final point features (N, C), `stage4` the stage-4 LiDAR point features
        (N, widths[4]) before any fusion (U2MKD's feature-imitation input, release `pts_feats`), `bottleneck` the
        point features entering the decoder (N, widths[4]), and the 4 encoder stage tensors.

        The point branch runs once per stride-1 voxel (M1 = len(voxel_coords)), each point then takes its
        voxel's outputs. `stage_hook(i, x, p, voxel_idx) -> (x, p)` may replace encoder stage i's voxel tensor
        `x` and the devoxelised point-branch features `p` (M1, C) (cross-modal fusion; voxel_idx (M1,) is each
        stride-1 voxel's voxel in x); the stage-4 features it returns enter the decoder (plus the point MLP of
        the stem's features)."""
        vc, pv = batch["voxel_coords"], batch["point_voxel"]
        x0 = self.stem(self.input_tensor(batch))
        z0 = x0.features  # the point branch runs on the stride-1 voxels (the release: their representatives)
        skips = [x0]
        x = x0
        for i in range(4):
            x = self.encode_stage(i, x, batch)
            stride = 2 ** (i + 1)
            if stage_hook is not None or i == 3:
                p = self.devoxelize(x, vc, stride)
                if i == 3:
                    stage4 = p
                if stage_hook is not None:
                    x, p = stage_hook(i, x, p, self.voxel_of_points(x, vc, stride))
            skips.append(x)
        z1 = p + self.point_mlp[0](z0)
        y = self.to_voxels(x, self.voxel_of_points(x, vc, 16), z1)
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
                z = self.devoxelize(y, vc, stride) + self.point_mlp[1 if j == 1 else 2](z)
                if j == 1:
                    y = self.to_voxels(y, self.voxel_of_points(y, vc, stride), z)
                    y = y.replace_feature(self.dropout(y.features))
        return {"logits": self.classifier(z)[pv], "point_features": z[pv], "stage4": stage4[pv], "bottleneck": z1[pv],
                "stages": skips[1:]}
