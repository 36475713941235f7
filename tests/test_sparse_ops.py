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
