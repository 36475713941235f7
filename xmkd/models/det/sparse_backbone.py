"""SECOND's sparse 3D encoders, in xmkd's (x, y, z) axis order (OpenPCDet's order is (z, y, x)).

Both reduce the voxel grid 8x in x and y and leave `z_cells(grid_z)` cells in z (2 on KITTI's 40 + 1 voxels):

- `res8x`: OpenPCDet's `VoxelResBackBone8x`, and with widths [16, 32, 64, 64] and 64 output channels its
  `VoxelResBackBone8x_c64`, the CMKD / HSRDN teacher [CMKD: pcdet/models/backbones_3d/spconv_backbone.py:296-397;
  tools/cfgs/kitti_models/CMKD/CMKD-scd/second_teacher.yaml:32]: a submanifold input conv, then four stages of
  (stride-2 sparse conv, except the first) + 2 residual `SparseBasicBlock`s, then a (3, 1, 1) conv of stride
  (2, 1, 1) in z.
- `plain8x`: OpenPCDet's residual-free `VoxelBackBone8x` [same file :69-180]: two submanifold convs per stage.

Every sparse conv is bias-free and followed by a BatchNorm (spconv's CPU kernels refuse a bias in eval()). The
release's `SparseBasicBlock` convs carry a bias in front of their BatchNorm; it cannot change a training step (the
batch mean removes it, so its gradient is zero) and only shifts the running mean, so it is left out here and folded
into the running mean when a release checkpoint is loaded (`xmkd.models.det.release_ckpt`).
Module names follow the release (conv_input, conv1..conv4, conv_out; conv1 / bn1 / conv2 / bn2 in a block).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from xmkd.ops.sparse import spconv_module

Z_PAD = 1  # the release's sparse shape is grid_size[::-1] + [1, 0, 0]: one voxel more in z


def _bn1d(c: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(c, eps=1e-3)


def z_cells(grid_z: int) -> int:
    """z cells left after the encoder for a grid of `grid_z` voxels (+ `Z_PAD`): pad 1, 1, 0 at the three stride-2
    convs, then the unpadded (3, 1, 1) stride-(2, 1, 1) output conv."""
    nz = grid_z + Z_PAD
    for pad in (1, 1, 0):
        nz = (nz + 2 * pad - 3) // 2 + 1
    return (nz - 3) // 2 + 1


def _post_act(cin: int, cout: int, key: str, stride: int = 1, padding: Any = 1, subm: bool = True) -> Any:
    """conv (3x3x3) + BN + ReLU: the release's `post_act_block`."""
    sp = spconv_module()
    conv = (sp.SubMConv3d(cin, cout, 3, padding=padding, bias=False, indice_key=key) if subm else
            sp.SparseConv3d(cin, cout, 3, stride=stride, padding=padding, bias=False, indice_key=key))
    return sp.SparseSequential(conv, _bn1d(cout), nn.ReLU())


class SparseBasicBlock(nn.Module):
    """Two 3x3x3 submanifold convs with BN, plus the identity: relu(bn2(conv2(relu(bn1(conv1(x))))) + x)."""

    def __init__(self, channels: int, key: str):
        super().__init__()
        sp = spconv_module()
        self.conv1 = sp.SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=key)
        self.bn1 = _bn1d(channels)
        self.conv2 = sp.SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=key)
        self.bn2 = _bn1d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: Any) -> Any:
        out = self.conv1(x)  # submanifold: same sites, same order as x
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return out.replace_feature(self.relu(self.bn2(out.features) + x.features))


class SparseEncoder8x(nn.Module):
    """`res8x` (residual, the CMKD teacher's) or `plain8x` (residual-free); widths w0..w3 per stage, then
    `out_channels` after the z-stride conv."""

    def __init__(self, in_channels: int, widths: list[int], out_channels: int, residual: bool = True):
        super().__init__()
        sp = spconv_module()
        w = widths
        if len(w) != 4:
            raise ValueError(f"the 8x sparse encoder has 4 stages, got widths {w}")

        def body(c: int, n: int) -> list[Any]:
            if residual:
                return [SparseBasicBlock(c, f"res{n}"), SparseBasicBlock(c, f"res{n}")]
            # VoxelBackBone8x: one submanifold conv in stage 1 (after conv_input), two in the others
            return [_post_act(c, c, f"subm{n}") for _ in range(2 if n > 1 else 1)]

        self.conv_input = _post_act(in_channels, w[0], "subm1")
        # nn.Sequential chains sparse tensors through its children (spconv's SparseSequential would hand a
        # non-spconv module like SparseBasicBlock the dense features instead)
        self.conv1 = nn.Sequential(*body(w[0], 1))
        self.conv2 = nn.Sequential(_post_act(w[0], w[1], "spconv2", 2, 1, subm=False), *body(w[1], 2))
        self.conv3 = nn.Sequential(_post_act(w[1], w[2], "spconv3", 2, 1, subm=False), *body(w[2], 3))
        # no z padding here (the release's padding=(0, 1, 1) in z, y, x)
        self.conv4 = nn.Sequential(_post_act(w[2], w[3], "spconv4", 2, (1, 1, 0), subm=False), *body(w[3], 4))
        self.conv_out = sp.SparseSequential(
            sp.SparseConv3d(w[3], out_channels, (1, 1, 3), stride=(1, 1, 2), padding=0, bias=False,
                            indice_key="spconv_down2"), _bn1d(out_channels), nn.ReLU())

    def forward(self, x: Any) -> tuple[Any, list[Any]]:
        """Sparse tensor over (X, Y, Z + Z_PAD) -> (output over (X/8, Y/8, z_cells), [the four stage outputs])."""
        x = self.conv_input(x)
        stages = []
        for stage in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = stage(x)
            stages.append(x)
        return self.conv_out(x), stages


SPARSE_BACKBONES = {"res8x": partial(SparseEncoder8x, residual=True),
                    "plain8x": partial(SparseEncoder8x, residual=False)}
