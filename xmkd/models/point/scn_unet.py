"""xMUDA's 3D network as released: SparseConvNet's `UNet(3, reps=1, planes, residual_blocks=False)` behind a 3x3
submanifold stem and ahead of a final BatchNorm-ReLU, here on spconv (METHODS.md section 2).

Release: FtD-PlusPlus `xmuda/models/scn_unet.py#L22-L29` (`UNetSCN`: InputLayer, SubmanifoldConvolution(in, 16, 3),
`scn.UNet(3, 1, [16, 32, ..., 112], False)`, BatchNormReLU(16), OutputLayer), and SparseConvNet
`sparseconvnet/networkArchitectures.py` `UNet`: with `residual_blocks=False` every level holds one VGG block
(BatchNorm-ReLU, then one 3x3 submanifold convolution) on the way down and one on the way up; between levels a
BatchNorm-ReLU + 2x2x2 stride-2 convolution goes down and a BatchNorm-ReLU + its transposed convolution comes back
up, and the skip is concatenated *before* the upsampled features. 7 levels: 26 sparse convolutions, all bias-free
(which also avoids spconv's CPU failure with biased convs in `eval()`, see xmkd/ops/sparse.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xmkd.ops.sparse import sparse_tensor, spconv_module

# SparseConvNet's BatchNormReLU keeps running = 0.99 * running + 0.01 * batch (`batchNormalization.py`, default
# momentum 0.99 in its convention; SCN/CPU/BatchNormalization.cpp#L35): PyTorch's momentum 0.01.
RELEASE_BN_MOMENTUM = 0.01


def bn_relu(channels: int, momentum: float) -> list[nn.Module]:
    """SparseConvNet's BatchNormReLU (eps 1e-4, affine) as BatchNorm1d + ReLU on the voxel features."""
    return [nn.BatchNorm1d(channels, eps=1e-4, momentum=momentum), nn.ReLU()]


def vgg_block(cin: int, cout: int, key: str, momentum: float) -> nn.Module:
    """SparseConvNet's pre-activated VGG block: BatchNorm-ReLU, then one 3x3 submanifold convolution."""
    sp = spconv_module()
    return sp.SparseSequential(*bn_relu(cin, momentum),
                               sp.SubMConv3d(cin, cout, 3, padding=1, bias=False, indice_key=key))


class SCNUNet(nn.Module):
    """The release's `UNetSCN(in_channels, m=base, block_reps=1, residual_blocks=False, num_planes=levels)`.

    Planes are base * (1, 2, ..., levels) (16, 32, ..., 112); the output is the `base`-channel (16) feature of every
    point after the final BatchNorm-ReLU. `bn_momentum` (PyTorch's convention) is the release's 0.01 by default."""

    def __init__(self, in_channels: int = 1, base: int = 16, levels: int = 7,
                 bn_momentum: float = RELEASE_BN_MOMENTUM):
        super().__init__()
        sp = spconv_module()
        planes = [base * (i + 1) for i in range(levels)]
        self.planes, self.stride = planes, 2 ** (levels - 1)
        self.stem = sp.SubMConv3d(in_channels, planes[0], 3, padding=1, bias=False, indice_key="subm0")
        mom, inner = bn_momentum, range(levels - 1)
        self.enc = nn.ModuleList(vgg_block(p, p, f"subm{i}", mom) for i, p in enumerate(planes))
        self.down = nn.ModuleList(sp.SparseSequential(*bn_relu(planes[i], mom), sp.SparseConv3d(
            planes[i], planes[i + 1], 2, stride=2, bias=False, indice_key=f"down{i}")) for i in inner)
        self.up = nn.ModuleList(sp.SparseSequential(*bn_relu(planes[i + 1], mom), sp.SparseInverseConv3d(
            planes[i + 1], planes[i], 2, bias=False, indice_key=f"down{i}")) for i in inner)
        self.dec = nn.ModuleList(vgg_block(2 * planes[i], planes[i], f"subm{i}", mom) for i in inner)
        self.out = nn.Sequential(*bn_relu(planes[0], mom))
        self.out_channels = planes[0]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Per-point features (N, 16) for the sparse-network batch of `voxel_batch` (voxel features ignored:
        every voxel starts from the constant 1, as the release's input)."""
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
            up = self.up[i](x)  # back on the voxels of skips[i], in their order (the inverse of down[i])
            x = self.dec[i](up.replace_feature(torch.cat([skips[i].features, up.features], 1)))
        return self.out(x.features)[batch["point_voxel"]]
