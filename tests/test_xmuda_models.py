"""FtD++ / xMUDA networks as released: parameter counts against counts derived from the release's definitions,
the layout details a count cannot see (dropout places, residuals, ReLU, attention scope), forward + backward on CPU.

Release files (FtD-PlusPlus 0bcb512, SparseConvNet networkArchitectures.py): xmuda/models/scn_unet.py,
xmuda/models/resnet34_unet.py, xmuda/models/bftd/xmuda_arch_uni.py, xmuda/models/CBAM.py,
xmuda/models/ExternalAttention.py."""

import numpy as np
import pytest
import torch
from torch import nn

from xmkd.data.collate import voxel_batch
from xmkd.models.image.unet import UNetResNet
from xmkd.models.mffm import CBAM, MFFM, ExternalAttention, FusedHead, segment_softmax
from xmkd.models.point.scn_unet import SCNUNet


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- the release's parameter counts, derived from its definitions ------------------------------------------------
def release_scn_unet(cin: int = 1, m: int = 16, levels: int = 7) -> tuple[int, int]:
    """(parameters, sparse convs) of `UNetSCN(cin, m, block_reps=1, residual_blocks=False, num_planes=levels)`:
    SubmanifoldConvolution(cin, m, 3) + scn.UNet + BatchNormReLU(m). Every conv is bias-free, a 3x3x3 kernel has 27
    taps, a 2x2x2 one 8; a BatchNormReLU(c) has 2c parameters. In scn.UNet a level of p planes (next level q) has a
    VGG block BNReLU(p) + SubMConv(p, p); if not the last level also BNReLU(p) + Convolution(p, q, 2, 2), the inner
    U, BNReLU(q) + Deconvolution(q, p, 2, 2) and, after JoinTable (2p channels), BNReLU(2p) + SubMConv(2p, p)."""
    planes = [m * (i + 1) for i in range(levels)]
    params, convs = 27 * cin * m + 2 * m, 1  # stem + final BatchNormReLU
    for i, p in enumerate(planes):
        params += 2 * p + 27 * p * p
        convs += 1
        if i + 1 < levels:
            q = planes[i + 1]
            params += (2 * p + 8 * p * q) + (2 * q + 8 * q * p) + (2 * 2 * p + 27 * 2 * p * p)
            convs += 3
    return params, convs


def release_unet_decoder() -> int:
    """Parameters of UNetResNet34 outside the ResNet encoder. `dec_stage(layer)` for a layer with input width i
    and output width o: conv = Conv3x3(2o -> o, biased) + BN(o), t_conv = ConvT2x2(o -> i, biased) + BN(i);
    stage 5 uses only t_conv (layer4: 256, 512); stages 4, 3, 2 both (layer3: 128, 256; layer2: 64, 128;
    layer1: 64, 64); stage 1 is Conv3x3(128 -> 64, biased)."""
    def conv(o: int) -> int:
        return 9 * 2 * o * o + o + 2 * o

    def t_conv(i: int, o: int) -> int:
        return 4 * o * i + i + 2 * i
    return t_conv(256, 512) + sum(conv(o) + t_conv(i, o) for i, o in ((128, 256), (64, 128), (64, 64))) + \
        9 * 128 * 64 + 64


def release_cbam(c: int = 64, reduction: int = 4, k: int = 3) -> int:
    """CBAMBlock(c, reduction, k): bias-free 1x1 convs c -> c/r -> c, spatial Conv(2 -> 1, k x k, biased)."""
    return 2 * c * (c // reduction) + 2 * k * k + 1


def release_mult_ea(d: int, num_heads: int = 8, coef: int = 4) -> int:
    """Mult_EA(d): trans_dims Linear(d, coef d); heads = num_heads coef, head dim coef d / heads, k = 256 / coef
    memory units; linear_0 Linear(head, k), linear_1 Linear(k, head), proj Linear(coef d, d), all biased."""
    e, k = coef * d, 256 // coef
    head = e // (num_heads * coef)
    return (d * e + e) + (head * k + k) + (k * head + head) + (e * d + d)


def release_mffm() -> int:
    """MFFM: CBAMBlock(64, 4, 3), Mult_EA(64), Mult_EA(16), Linear(80, 80) + ReLU, Mult_EA(80), Linear(80, 80) +
    BatchNorm1d(80) + ReLU."""
    return release_cbam() + release_mult_ea(64) + release_mult_ea(16) + (80 * 80 + 80) + release_mult_ea(80) + \
        (80 * 80 + 80 + 2 * 80)


def release_fused_head(classes: int) -> int:
    """Net2DSeg's proj_head1 Linear(80, 64), proj_head2 Linear(128, 64), cls_head1 Linear(64, classes)."""
    return (80 * 64 + 64) + (128 * 64 + 64) + (64 * classes + classes)


# -- 3D U-Net -----------------------------------------------------------------------------------------------------
def test_scn_unet_is_the_release_layout():
    params, convs = release_scn_unet()
    assert (params, convs) == (2_688_656, 26)  # the audit's independent count (ftd-audit.md section 3.11)
    net = SCNUNet()
    assert net.planes == [16, 32, 48, 64, 80, 96, 112] and net.stride == 64
    assert count(net) == params
    spconvs = [mod for mod in net.modules() if type(mod).__name__ in ("SubMConv3d", "SparseConv3d",
                                                                       "SparseInverseConv3d")]
    assert len(spconvs) == convs and all(mod.bias is None for mod in spconvs)  # bias-free: spconv CPU eval works
    assert all(b.momentum == 0.01 for b in net.modules() if isinstance(b, nn.BatchNorm1d))  # SCN's 0.99


def test_scn_unet_forward_backward_and_eval():
    rng = np.random.default_rng(0)
    xyz = [rng.uniform(-6, 6, (800, 3)).astype(np.float32) for _ in range(2)]
    batch = voxel_batch(xyz, [np.ones((800, 1), np.float32)] * 2, 0.2, [-6.4, -6.4, -6.4, 6.4, 6.4, 6.4],
                        multiple=64)
    net = SCNUNet()
    out = net(batch)
    assert out.shape == (1600, 16) and out.min() >= 0  # after the final BatchNorm-ReLU
    (out * torch.randn_like(out)).sum().backward()
    for mod in (net.stem, net.enc[6][2], net.down[5][2], net.up[0][2], net.dec[0][2]):
        assert mod.weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        assert net(batch).shape == (1600, 16)


# -- 2D network ---------------------------------------------------------------------------------------------------
def test_unet_decoder_is_the_release_decoder():
    net = UNetResNet("resnet34")
    decoder = count(net) - count(net.backbone)
    assert decoder == release_unet_decoder() == 2_329_472  # the audit's count (section 3.11)
    assert sum(isinstance(mod, nn.BatchNorm2d) for mod in net.modules()) - \
        sum(isinstance(mod, nn.BatchNorm2d) for mod in net.backbone.modules()) == 7
    assert set(net.backbone.state_dict()) >= {"conv1.weight", "layer4.2.bn2.running_var", "fc.weight"}
    x = torch.randn(2, 3, 45, 70, requires_grad=True)  # not a multiple of 16: padded, then cropped back
    y = net(x)
    assert y.shape == (2, 64, 45, 70)
    assert y.min() < 0  # the last conv is linear
    y.mean().backward()
    assert net.backbone.conv1.stride == (1, 1) and net.backbone.conv1.weight.grad.abs().sum() > 0


def test_unet_dropout_sits_after_layer3_and_layer4():
    """With p = 1 in training, everything layer3 and layer4 send on is zero: they get no gradient, while layer2
    (whose skip is not dropped) does."""
    net = UNetResNet("resnet18", dropout=1.0).train()
    net(torch.randn(2, 3, 32, 48)).square().mean().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.backbone.layer3.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.backbone.layer4.parameters())
    assert net.backbone.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert net.dec_conv_stage1.weight.grad.abs().sum() > 0


# -- MFFM and the fused head --------------------------------------------------------------------------------------
def test_mffm_parameter_counts_are_the_release():
    m = MFFM()
    assert count(m.cbam) == release_cbam() == 2_067
    assert [count(m.ea_2d), count(m.ea_3d), count(m.ea)] == [release_mult_ea(d) for d in (64, 16, 80)]
    assert [m.ea_2d.heads, m.ea_2d.head_dim, m.ea_3d.head_dim, m.ea.head_dim] == [32, 8, 2, 10]
    assert count(m) == release_mffm() == 104_775  # the audit's count (section 3.11)
    assert count(FusedHead(64, 80, 6)) == release_fused_head(6)


def test_mffm_fuses_detached_features():
    img = torch.randn(2, 64, 12, 20, requires_grad=True)
    pts = torch.randn(30, 16, requires_grad=True)
    sample = torch.tensor([0] * 14 + [1] * 16)
    uv = torch.rand(30, 2) * torch.tensor([20.0, 12.0])
    m, head = MFFM(), FusedHead(64, 80, 6)
    fused = m(img, sample, uv, pts, sample, 2)
    assert fused.shape == (30, 80)
    logits = head(torch.randn(30, 64, requires_grad=True), fused)
    assert logits.shape == (30, 6)
    logits.square().sum().backward()
    assert img.grad is None and pts.grad is None  # the fusion learns from the backbones without steering them
    for p in (m.cbam.spatial.weight, m.cbam.mlp[0].weight, m.ea.expand.weight, m.ea_2d.mk.weight, m.proj[0].weight,
              head.proj1.weight, head.cls.weight):
        assert p.grad.abs().sum() > 0


def test_fused_head_rectifies_the_projected_fusion():
    head = FusedHead(64, 80, 6)
    with torch.no_grad():
        head.proj1.bias.fill_(-1e4)  # ReLU(proj1(fused)) = 0 for any bounded fused feature
    f2 = torch.randn(5, 64)
    assert torch.equal(head(f2, torch.randn(5, 80)), head(f2, torch.randn(5, 80)))


def test_cbam_adds_its_input():
    cbam = CBAM(8)
    with torch.no_grad():
        cbam.spatial.bias.fill_(-1e4)  # spatial attention 0: only the residual is left
    x = torch.randn(1, 8, 5, 5)
    assert torch.equal(cbam(x), x)
    assert [cbam.mlp[0].out_channels, cbam.spatial.kernel_size] == [2, (3, 3)]


@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_external_attention_normalises_over_the_batch_or_each_sample(scope):
    torch.manual_seed(0)
    ea = ExternalAttention(16, scope=scope).eval()
    sample = torch.tensor([0] * 6 + [1] * 5)
    x = torch.randn(11, 16)
    y = x.clone()
    y[6:] += 3.0  # change only sample 1
    first = ea(x, sample, 2)[:6], ea(y, sample, 2)[:6]
    assert torch.allclose(*first) == (scope == "sample")  # the release's softmax runs over every point of the batch


def test_external_attention_dropout_only_in_training():
    torch.manual_seed(0)
    ea = ExternalAttention(16)
    x, sample = torch.randn(40, 16), torch.zeros(40, dtype=torch.long)
    assert not torch.equal(ea(x, sample, 1), ea(x, sample, 1))  # dropout 0.2 on attention and projection
    ea.eval()
    assert torch.equal(ea(x, sample, 1), ea(x, sample, 1))
    with pytest.raises(ValueError, match="heads"):
        ExternalAttention(10, heads=32)


def test_segment_softmax_normalises_each_sample_separately():
    logits = torch.randn(10, 3)
    seg = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    p = segment_softmax(logits, seg, 3)
    for s in range(3):
        assert torch.allclose(p[seg == s].sum(0), torch.ones(3), atol=1e-6)
        assert torch.allclose(p[seg == s], torch.softmax(logits[seg == s], 0), atol=1e-6)
