import torch

from xmkd.ops.sparse import sparse_tensor, spconv_module


def test_sparse_conv_forward_backward_and_eval_on_cpu():
    sp = spconv_module()
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 2, 1], [0, 3, 3, 3], [1, 0, 0, 0]])
    feats = torch.randn(4, 4, requires_grad=True)
    x = sparse_tensor(feats, coords, [8, 8, 8], batch_size=2)
    net = sp.SparseSequential(
        sp.SubMConv3d(4, 8, 3, bias=False, indice_key="subm1"),
        torch.nn.BatchNorm1d(8),
        sp.SparseConv3d(8, 8, 3, stride=2, padding=1, bias=False),
    )
    y = net(x)
    y.features.square().sum().backward()  # needs the stream shim on a CPU-only torch
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        assert net(x).features.shape[1] == 8


def test_submanifold_conv_equals_the_dense_conv_with_several_threads():
    """On a fully occupied grid a 3x3x3 submanifold conv is the dense zero-padded conv, forward and backward. spconv's
    multi-threaded CPU scatter-add drops some rows' offsets (13 of 16 runs wrong before the shim), so repeat."""
    import numpy as np
    import torch.nn.functional as F

    sp = spconv_module()
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        nx, ny, nz = 5, 6, 7
        grid = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"), -1).reshape(-1, 3)
        coords = torch.from_numpy(np.column_stack([np.zeros(len(grid)), grid]).astype(np.int32))
        idx = coords[:, 1:].long().T
        gen = torch.Generator().manual_seed(0)
        for _ in range(8):
            conv = sp.SubMConv3d(2, 3, 3, padding=1, bias=False)
            feats = torch.randn(len(coords), 2, generator=gen, requires_grad=True)
            out = conv(sparse_tensor(feats, coords, (nx, ny, nz), 1))
            dense_in = torch.zeros(1, 2, nx, ny, nz)
            dense_in[0, :, idx[0], idx[1], idx[2]] = feats.detach().T
            dense_in.requires_grad_(True)
            ref = F.conv3d(dense_in, conv.weight.detach().permute(0, 4, 1, 2, 3), None, 1, 1)
            got = out.features[torch.argsort(out.indices[:, 1:].long() @ torch.tensor([ny * nz, nz, 1]))]
            assert torch.allclose(got, ref[0].reshape(3, -1).T, atol=1e-5)
            out.features.square().sum().backward()
            ref.square().sum().backward()
            assert torch.allclose(feats.grad, dense_in.grad[0, :, idx[0], idx[1], idx[2]].T, atol=1e-4)
    finally:
        torch.set_num_threads(threads)


def test_a_cpu_batch_past_32_bit_voxel_keys_is_refused():
    """spconv's CPU index generation aliases the samples of a batch past 2**32 batch x grid cells (batch 5 on
    2048 x 2048 x 256 exchanged features in a measurement); 4 such samples (exactly 2**32) are still exact."""
    import pytest

    from xmkd.errors import XmkdConfigError

    coords = torch.tensor([[0, 1, 1, 1]])
    sparse_tensor(torch.ones(1, 1), coords, (2048, 2048, 256), 4)
    # the keys a user can set, and the grid as plain numbers (spatial shapes often arrive as tensors)
    with pytest.raises(XmkdConfigError, match=r"5 x \[2048, 2048, 256\] voxels.*lower data.batch_size, .*"
                                              r"target.point_range / target.voxel_size for a target domain"):
        sparse_tensor(torch.ones(1, 1), coords, torch.tensor([2048, 2048, 256]), 5)
