"""xMUDA's 3D network: a sparse U-Net of 7 levels with planes 16, 32, ..., 112 and one residual block per level
(SparseConvNet's UNet layout, here on spconv), whose input feature is the constant 1 and whose output is a
16-channel feature per point (METHODS.md section 2)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xmkd.ops.sparse import sparse_tensor, spconv_module


def _bn(c: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(c, eps=1e-4, momentum=0.1)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, key: str):
        super().__init__()
        sp = spconv_module()
        self.net = sp.SparseSequential(
            sp.SubMConv3d(cin, cout, 3, padding=1, bias=False, indice_key=key), _bn(cout), nn.ReLU(),
            sp.SubMConv3d(cout, cout, 3, padding=1, bias=False, indice_key=key), _bn(cout))
        self.skip = None if cin == cout else sp.SparseSequential(sp.SubMConv3d(cin, cout, 1, bias=False,
                                                                               indice_key=key + "_skip"), _bn(cout))
        self.relu = nn.ReLU()

    def forward(self, x: Any) -> Any:
        out = self.net(x)
        identity = x if self.skip is None else self.skip(x)
        return out.replace_feature(self.relu(out.features + identity.features))


class SCNUNet(nn.Module):
    def __init__(self, in_channels: int = 1, base: int = 16, levels: int = 7):
        super().__init__()
        sp = spconv_module()
        planes = [base * (i + 1) for i in range(levels)]
        self.planes, self.stride = planes, 2 ** (levels - 1)
        self.stem = sp.SparseSequential(sp.SubMConv3d(in_channels, planes[0], 3, padding=1, bias=False,
                                                      indice_key="l0"), _bn(planes[0]), nn.ReLU())
        self.enc = nn.ModuleList(Block(planes[i], planes[i], f"l{i}") for i in range(levels))
        self.down = nn.ModuleList(sp.SparseSequential(
            sp.SparseConv3d(planes[i], planes[i + 1], 2, stride=2, bias=False, indice_key=f"d{i}"),
            _bn(planes[i + 1]), nn.ReLU()) for i in range(levels - 1))
        self.up = nn.ModuleList(sp.SparseSequential(
            sp.SparseInverseConv3d(planes[i + 1], planes[i], 2, bias=False, indice_key=f"d{i}"), _bn(planes[i]),
            nn.ReLU()) for i in range(levels - 1))
        self.dec = nn.ModuleList(Block(2 * planes[i], planes[i], f"l{i}") for i in range(levels - 1))
        self.out_channels = planes[0]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Per-point features (N, 16) for the sparse-network batch of `voxel_batch` (voxel features ignored:
        every voxel starts from the constant 1)."""
        coords = batch["voxel_coords"]
        ones = torch.ones(len(coords), 1, device=coords.device)
        x = self.stem(sparse_tensor(ones, coords, batch["spatial_shape"], int(batch["batch_size"])))
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x)
            if i < len(self.down):
                skips.append(x)
                x = self.down[i](x)
        for i in reversed(range(len(self.up))):
            up = self.up[i](x)
            x = self.dec[i](up.replace_feature(torch.cat([up.features, skips[i].features], 1)))
        return x.features[batch["point_voxel"]]
