"""FtD++ / xMUDA networks: every module forward + backward on CPU, segment softmax, MFFM detaches its inputs."""

import numpy as np
import torch

from xmkd.data.collate import voxel_batch
from xmkd.models.image.unet import UNetResNet
from xmkd.models.mffm import CBAM, MFFM, ExternalAttention, segment_softmax
from xmkd.models.point.scn_unet import SCNUNet


def test_unet_resnet34_full_resolution_output_for_any_size():
    net = UNetResNet("resnet34")
    x = torch.randn(2, 3, 45, 70, requires_grad=True)  # not a multiple of 16: padded, then cropped back
    y = net(x)
    assert y.shape == (2, 64, 45, 70)
    y.mean().backward()
    assert net.backbone.conv1.stride == (1, 1) and net.backbone.conv1.weight.grad.abs().sum() > 0


def test_scn_unet_seven_levels():
    rng = np.random.default_rng(0)
    xyz = [rng.uniform(-6, 6, (800, 3)).astype(np.float32) for _ in range(2)]
    batch = voxel_batch(xyz, [np.ones((800, 1), np.float32)] * 2, 0.2, [-6.4, -6.4, -6.4, 6.4, 6.4, 6.4],
                        multiple=64)
    net = SCNUNet()
    assert net.planes == [16, 32, 48, 64, 80, 96, 112] and net.stride == 64
    out = net(batch)
    assert out.shape == (1600, 16)
    out.sum().backward()
    assert net.stem[0].weight.grad.abs().sum() > 0 and net.dec[0].net[0].weight.grad.abs().sum() > 0


def test_segment_softmax_normalises_each_sample_separately():
    logits = torch.randn(10, 3)
    seg = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    p = segment_softmax(logits, seg, 3)
    for s in range(3):
        assert torch.allclose(p[seg == s].sum(0), torch.ones(3), atol=1e-6)
        assert torch.allclose(p[seg == s], torch.softmax(logits[seg == s], 0), atol=1e-6)


def test_mffm_fuses_detached_features():
    img = torch.randn(2, 64, 12, 20, requires_grad=True)
    pts = torch.randn(30, 16, requires_grad=True)
    sample = torch.tensor([0] * 14 + [1] * 16)
    uv = torch.rand(30, 2) * torch.tensor([20.0, 12.0])
    m = MFFM()
    fused = m(img, sample, uv, pts, sample, 2)
    assert fused.shape == (30, 80)
    fused.sum().backward()
    assert img.grad is None and pts.grad is None  # the fusion learns from the backbones without steering them
    assert m.cbam.spatial.weight.grad.abs().sum() > 0 and m.ea.q.weight.grad.abs().sum() > 0
    assert CBAM(8)(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)
    assert ExternalAttention(16)(torch.randn(7, 16), torch.zeros(7, dtype=torch.long), 1).shape == (7, 16)
