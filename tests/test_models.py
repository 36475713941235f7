"""Every network forward and backward on CPU with small inputs; parameter names compatible with torchvision."""

import numpy as np
import pytest
import torch

from xmkd.data.collate import in_range, voxel_batch
from xmkd.engine.checkpoint import load_weights, save
from xmkd.errors import XmkdError
from xmkd.models.image.resnet import ResNet
from xmkd.models.image.swiftnet import SwiftNet
from xmkd.models.losses import lovasz_softmax, seg_loss
from xmkd.models.point.sparse_unet import SparseUNet, SparseUNetConfig
from xmkd.models.point.sphereformer import SphereFormerBlock, window_chunks
from xmkd.ops.sparse import lookup


@pytest.mark.parametrize("depth, params, keys", [("resnet18", 11_689_512, 122), ("resnet34", 21_797_672, 218),
                                                  ("resnet50", 25_557_032, 320)])
def test_resnet_matches_torchvision_layout(depth, params, keys, tmp_path):
    # Parameter counts and state-dict sizes of torchvision's resnet18/34/50, less their ImageNet classifier `fc`
    # (512 or 2048 x 1000 weights + 1000 biases, 2 keys), which no method uses and the backbone does not hold.
    m = ResNet(depth)
    sd = m.state_dict()
    width = 2048 if depth == "resnet50" else 512
    assert sum(p.numel() for p in m.parameters()) == params - (width * 1000 + 1000) and len(sd) == keys - 2
    assert not any(k.startswith("fc.") for k in sd)
    if depth == "resnet18":
        assert sd["layer3.0.downsample.0.weight"].shape == (256, 128, 1, 1)
    if depth == "resnet50":
        assert sd["layer1.0.conv3.weight"].shape == (256, 64, 1, 1) and sd["layer4.2.bn3.running_var"].shape == (2048,)
    # A torchvision/timm state dict saved as a plain file (with its `fc`) loads into a fresh model: `fc.*` dropped,
    # every other key strict.
    torch.save({**sd, "fc.weight": torch.zeros(1000, width), "fc.bias": torch.zeros(1000)}, tmp_path / "imagenet.pth")
    fresh = ResNet(depth)
    fresh.load_pretrained(tmp_path / "imagenet.pth")
    assert torch.equal(fresh.state_dict()["conv1.weight"], sd["conv1.weight"])
    with pytest.raises(XmkdError, match="weights do not fit ResNet: "):
        ResNet("resnet34" if depth == "resnet18" else "resnet18").load_pretrained(tmp_path / "imagenet.pth")
    # ... and an xmkd checkpoint of a net holding the backbone, written when the backbone still had its `fc`
    net = torch.nn.Sequential(ResNet(depth))
    old = {**net.state_dict(), "0.fc.weight": torch.zeros(1000, width), "0.fc.bias": torch.zeros(1000)}
    load_weights(net, old, "old.pt")
    with pytest.raises(XmkdError, match="not in model: 0.other"):
        load_weights(net, {**old, "0.other": torch.zeros(1)}, "old.pt")


def test_a_checkpoint_of_another_shape_gives_a_short_error():
    net = ResNet("resnet18")
    wrong = {k: torch.zeros(*v.shape, 2) if v.ndim else v for k, v in net.state_dict().items()}
    with pytest.raises(XmkdError) as err:
        load_weights(net, wrong, "wrong.pt")
    message = str(err.value)
    shapes = [v for v in net.state_dict().values() if v.ndim]
    assert f"shape mismatch of {len(shapes)} tensor(s): conv1.weight: checkpoint (64, 3, 7, 7, 2) vs model " \
        "(64, 3, 7, 7)" in message
    assert f"; ... ({len(shapes) - 5} more)" in message and len(message) < 1000


def test_resnet_options_and_backward():
    x = torch.randn(1, 3, 64, 96, requires_grad=True)
    feats = ResNet("resnet50", dilate=(False, True, True))(x)
    assert [f.shape[-2:] for f in feats] == [(32, 48), (16, 24), (8, 12), (8, 12), (8, 12)]  # output stride 8
    feats = ResNet("resnet18", stem_stride=1)(x)
    assert feats[0].shape[-2:] == (64, 96) and feats[4].shape[1] == 512
    feats[4].mean().backward()
    assert x.grad is not None


def test_swiftnet_forward_backward():
    net = SwiftNet(num_classes=7)
    x = torch.randn(2, 3, 72, 128)
    logits = net(x)
    assert logits.shape == (2, 7, 72, 128)
    logits.logsumexp(1).mean().backward()
    assert net.backbone.conv1.weight.grad.abs().sum() > 0 and net.spp.fuse[2].weight.grad is not None
    assert net.decode(net.encode(x)).shape == (2, 128, 18, 32)


def test_window_chunks_cover_each_token_once():
    keys = torch.tensor([[0, 0], [0, 1], [0, 0], [1, 0], [0, 0], [0, 0], [0, 0]])
    slots, _ = window_chunks(keys, 2)
    filled = slots[slots >= 0]
    assert sorted(filled.tolist()) == list(range(7))
    for row in slots:  # a chunk holds tokens of one window only
        ids = row[row >= 0]
        assert len({tuple(keys[i].tolist()) for i in ids}) == 1


def test_sphereformer_block_attends_only_within_windows():
    torch.manual_seed(0)
    block = SphereFormerBlock(16, heads=4, drop_path=0.0, cube=1.0)
    xyz = torch.tensor([[10.2, 0.3, 0.1], [10.4, 0.5, 0.2], [30.0, 20.0, 0.5], [30.3, 20.1, 0.4]])
    x = torch.randn(4, 16, requires_grad=True)
    out = block(x, xyz, torch.zeros(4))
    out[0].sum().backward()
    # token 0 shares a cubic window (and a radial one) with token 1 only: tokens 2, 3 get no gradient
    assert x.grad[1].abs().sum() > 0 and x.grad[2].abs().sum() == 0 and x.grad[3].abs().sum() == 0
    # tokens of different samples never attend to each other
    x2 = torch.randn(4, 16, requires_grad=True)
    block(x2, xyz[[0, 0, 0, 0]], torch.tensor([0, 1, 2, 3]))[0].sum().backward()
    assert x2.grad[1:].abs().sum() == 0


def small_batch(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    pr = [-16, -16, -3, 16, 16, 3]
    xyzs, feats = [], []
    for _ in range(2):
        xyz = np.column_stack([rng.uniform(-15, 15, n), rng.uniform(-15, 15, n), rng.normal(0, 0.5, n)])
        xyz = xyz[in_range(xyz, pr)].astype(np.float32)
        xyzs.append(xyz)
        feats.append(np.column_stack([xyz, rng.uniform(0, 1, len(xyz))]).astype(np.float32))
    return voxel_batch(xyzs, feats, 0.4, pr), sum(len(x) for x in xyzs)


def test_lookup():
    table = torch.tensor([[0, 1, 2, 3], [1, 0, 0, 0], [0, 5, 5, 5]])
    query = torch.tensor([[0, 5, 5, 5], [0, 1, 2, 3], [1, 1, 1, 1]])
    assert lookup(query, table).tolist() == [2, 0, -1]


@pytest.mark.parametrize("sphereformer", [True, False])
def test_sparse_unet_forward_backward_and_eval(sphereformer):
    batch, n = small_batch()
    net = SparseUNet(4, 5, SparseUNetConfig(cr=0.25, sphereformer=sphereformer, blocks=1))
    out = net(batch)
    assert out["logits"].shape == (n, 5) and len(out["stages"]) == 4
    assert out["bottleneck"].shape == (n, net.widths[4])
    loss = sum(seg_loss(out["logits"], torch.randint(0, 5, (n,))).values())
    loss.backward()
    assert net.stem[0].weight.grad.abs().sum() > 0 and net.classifier.weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        assert net(batch)["logits"].shape == (n, 5)


def test_sparse_unet_stage_hook_sees_every_stage():
    batch, n = small_batch(1500)
    net = SparseUNet(4, 3, SparseUNetConfig(cr=0.25, sphereformer=False, blocks=1))
    seen = []

    def hook(i, x, point_idx):
        seen.append((i, x.features.shape[0], int(point_idx.max())))
        return x.replace_feature(x.features * 0)  # fusion may replace stage features

    out = net(batch, stage_hook=hook)
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    assert all(mx < m for _, m, mx in seen)
    assert torch.all(out["stages"][3].features == 0)


def test_lovasz_softmax():
    labels = torch.tensor([0, 0, 1, 1, 255])
    perfect = torch.tensor([[9.0, -9], [9, -9], [-9, 9], [-9, 9], [0, 0]])
    assert lovasz_softmax(perfect, labels) < 1e-3
    wrong = -perfect
    assert lovasz_softmax(wrong, labels) > 0.9
    logits = torch.zeros(5, 2, requires_grad=True)
    lovasz_softmax(logits, labels).backward()
    assert logits.grad[:4].abs().sum() > 0 and logits.grad[4].abs().sum() == 0
    assert lovasz_softmax(torch.zeros(2, 2), torch.tensor([255, 255])).item() == 0.0


def test_checkpoint_of_models_round_trip(tmp_path):
    net = SwiftNet(3)
    save(tmp_path / "c.pt", {"models": {"camera": net.state_dict()}})
    from xmkd.engine.checkpoint import load_module_from_file

    other = SwiftNet(3)
    load_module_from_file(other, tmp_path / "c.pt", key="camera")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
