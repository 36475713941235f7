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
from xmkd.models.point.sphereformer import (
    QUANT_STEPS,
    DualWindowAttention,
    SphereFormerBlock,
    cart2sphere,
    exponential_split,
    window_groups,
)
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


def test_window_groups_cover_each_token_once():
    window = torch.tensor([0, 1, 0, 2, 0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3])
    groups = window_groups(window)
    filled = torch.cat([g[g >= 0] for g in groups])
    assert sorted(filled.tolist()) == list(range(len(window)))
    for rows in groups:
        for row in rows:  # a row holds one whole window
            ids = row[row >= 0]
            assert len(set(window[ids].tolist())) == 1 and len(ids) == int((window == window[ids[0]]).sum())
        assert rows.shape[1] <= 2 * max(4, int((rows >= 0).sum(1).min()))  # bucketed: padding below half a row


def test_exponential_split_matches_the_release_table():
    a = 0.0125  # release docstring: [0,a)->0 [a,2a)->1 [2a,4a)->2 [4a,6a)->3 [6a,10a)->4 [10a,14a)->5; [-a,0)->-1
    d = torch.tensor([0.0, 0.9, 1.0, 1.9, 2.0, 3.9, 4.0, 5.9, 6.0, 9.9, 10.0, 13.9, -0.5, -1.5, -2.5]) * a
    assert exponential_split(d, a).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, -1, -2, -3]


def reference_attention(attn: DualWindowAttention, x, xyz, batch):
    """The release's formulas token by token (sptr `sparse_self_attention` with contextual RPE)."""
    m, h, d = x.shape[0], attn.heads, attn.head_dim
    q, k, v = attn.qkv(x).view(m, 3, h, d).unbind(1)
    q = q * d ** -0.5
    out = torch.zeros(m, h, d)
    for branch, heads in (("cube", range(attn.h1)), ("radial", range(attn.h1, h))):
        pos = xyz if branch == "cube" else cart2sphere(xyz)
        win = attn.cube if branch == "cube" else attn.radial
        quant = win / QUANT_STEPS if branch == "cube" else attn.radial_quant
        tq, tk, tv = attn.cube_tables if branch == "cube" else attn.radial_tables
        lo = pos.min(0).values
        cell = torch.floor((pos - lo) / win)
        grid = torch.floor(torch.remainder(pos - lo, win) / quant).long()
        for i in range(m):
            mates = [j for j in range(m) if batch[j] == batch[i] and torch.equal(cell[j], cell[i])]
            r = torch.stack([grid[i] - grid[j] + QUANT_STEPS - 1 for j in mates])
            if branch == "radial":
                dr = torch.stack([pos[i, 2] - pos[j, 2] for j in mates])
                r[:, 2] = exponential_split(dr, attn.rpe_a) + QUANT_STEPS
                r = r.clamp(0, 2 * QUANT_STEPS - 1)
            for c, hh in enumerate(heads):
                logits = torch.stack([q[i, hh] @ (k[j, hh] + sum(tq[r[n, a], a, c] for a in range(3)))
                                      + k[j, hh] @ sum(tk[r[n, a], a, c] for a in range(3))
                                      for n, j in enumerate(mates)])
                w = torch.softmax(logits, 0)
                out[i, hh] = sum(w[n] * (v[j, hh] + sum(tv[r[n, a], a, c] for a in range(3)))
                                 for n, j in enumerate(mates))
    return attn.proj(out.reshape(m, h * d))


def test_full_window_attention_equals_the_release_formulas():
    torch.manual_seed(0)
    attn = DualWindowAttention(16, heads=4, cube=2.0, radial=(20.0, 20.0, 120.0))
    for t in [*attn.cube_tables, *attn.radial_tables]:  # visible RPE (the release's init is std 0.02)
        torch.nn.init.normal_(t, std=0.5)
    xyz = torch.cat([torch.rand(12, 3) * 3 + torch.tensor([8.0, 1.0, -1.0]), torch.rand(6, 3) * 3 - 10])
    batch = torch.tensor([0] * 15 + [1] * 3)
    x = torch.randn(18, 16)
    with torch.no_grad():
        expected = reference_attention(attn, x, xyz, batch)
        assert torch.allclose(attn(x, xyz, batch), expected, atol=1e-5)


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
    net = SparseUNet(4, 5, SparseUNetConfig(cr=0.25, sphereformer=sphereformer, blocks=1, head_dim=4, window=1.2))
    out = net(batch)
    assert out["logits"].shape == (n, 5) and len(out["stages"]) == 4
    assert out["bottleneck"].shape == (n, net.widths[4])
    loss = sum(seg_loss(out["logits"], torch.randint(0, 5, (n,))).values())
    loss.backward()
    assert net.stem[0].weight.grad.abs().sum() > 0 and net.classifier.weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        assert net(batch)["logits"].shape == (n, 5)


def test_trilinear_devoxelisation_weights_the_neighbouring_voxels():
    from xmkd.ops.sparse import sparse_tensor

    net = SparseUNet(4, 3, SparseUNetConfig(cr=0.25, sphereformer=False, blocks=1))
    # stride-2 voxels (0,0,0) = 1.0 and (1,0,0) = 3.0; (0,1,0) absent
    x = sparse_tensor(torch.tensor([[1.0], [3.0]]), torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]]), [8, 8, 8], 1)
    points = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 2, 0, 0]])  # stride-1 integer coords
    # (1,0,0) is half-way along x between the two voxels' corners; (1,1,0) too (its y neighbour is missing, so the
    # weights renormalise); (2,0,0) sits on voxel (1,0,0)'s corner
    assert net.devoxelize(x, points, 2).squeeze(1).tolist() == [1.0, 2.0, 2.0, 3.0]
    net.cfg.devoxelize = "nearest"
    assert net.devoxelize(x, points, 2).squeeze(1).tolist() == [1.0, 1.0, 1.0, 3.0]


def test_sparse_unet_stage_hook_sees_every_stage():
    batch, n = small_batch(1500)
    net = SparseUNet(4, 3, SparseUNetConfig(cr=0.25, sphereformer=False, blocks=1))
    seen = []

    def hook(i, x, p, voxel_idx):
        seen.append((i, x.features.shape[0], int(voxel_idx.max()), p.shape))
        if i < 3:
            return x, p
        seen.append(p.clone())
        return x.replace_feature(x.features * 0), p * 0  # fusion may replace stage features

    out = net(batch, stage_hook=hook)
    stage4_in = seen.pop()
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    m1, pv = len(batch["voxel_coords"]), batch["point_voxel"]  # the point branch runs per stride-1 voxel
    assert all(mx < m and shape == (m1, net.widths[i + 1]) for i, m, mx, shape in seen) and len(out["logits"]) == n
    assert torch.all(out["stages"][3].features == 0)
    assert torch.equal(out["stage4"], stage4_in[pv])  # the feature-imitation input is what the hook received
    assert torch.allclose(out["bottleneck"], net.point_mlp[0](net.stem(net.input_tensor(batch)).features)[pv])
    # (the hook's stage-4 features, zeros, plus the stem's point MLP)


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
    from xmkd.models.weights import load_module_from_file

    other = SwiftNet(3)
    load_module_from_file(other, tmp_path / "c.pt", key="camera")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
