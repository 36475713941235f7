"""The CMKD / HSRDN SECOND teacher as released: parameter counts derived from the release's definitions, the
residual sparse encoder against a dense re-implementation of the release's (in its own z, y, x axis order), and
loading a state dict with the release's names and shapes [CMKD: pcdet/models/backbones_3d/spconv_backbone.py:296-397
VoxelResBackBone8x_c64; backbones_2d/base_bev_backbone.py; dense_heads/anchor_head_single_qfl.py;
tools/cfgs/kitti_models/CMKD/CMKD-scd/second_teacher.yaml]."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmkd.errors import XmkdDataError
from xmkd.models.det.release_ckpt import convert_release_state
from xmkd.models.det.second import Second
from xmkd.ops.sparse import sparse_tensor

WIDTHS, OUT = (16, 32, 64, 64), 64  # VoxelResBackBone8x_c64


def release_encoder_params(cin: int = 4) -> tuple[int, int]:
    """(parameters, of which conv biases) of VoxelResBackBone8x_c64 from its definition: post_act_block = bias-free
    conv + BN (2 c); SparseBasicBlock = two 3x3x3 SubM convs WITH bias (norm_fn is given, so bias=True) + two BNs."""
    def conv(i, o, k=27):
        return k * i * o

    def post(i, o, k=27):
        return conv(i, o, k) + 2 * o

    def block(c):
        return 2 * (conv(c, c) + c) + 2 * 2 * c

    w = WIDTHS
    total = (post(cin, w[0]) + 2 * block(w[0]) + post(w[0], w[1]) + 2 * block(w[1]) + post(w[1], w[2])
             + 2 * block(w[2]) + post(w[2], w[3]) + 2 * block(w[3]) + post(w[3], OUT, k=3))
    biases = 2 * 2 * sum(w)  # 2 blocks x 2 convs per stage
    return total, biases


def release_state(rng: np.random.Generator, kernel_layout: str = "2.x") -> dict[str, torch.Tensor]:
    """A SECONDNet `model_state` with the release's names and shapes (KITTI, 3 classes x 2 rotations), random values.
    Sparse kernels in spconv 2.x's (out, kz, ky, kx, in) or 1.x's (kz, ky, kx, in, out) layout."""
    sd: dict[str, torch.Tensor] = {}

    def t(*shape, scale=0.1):
        return torch.from_numpy(rng.normal(0, scale, shape).astype(np.float32))

    def bn(p, c):
        sd[f"{p}.weight"], sd[f"{p}.bias"] = 1 + t(c), t(c)
        sd[f"{p}.running_mean"] = t(c)
        sd[f"{p}.running_var"] = torch.from_numpy(rng.uniform(0.5, 1.5, c).astype(np.float32))
        sd[f"{p}.num_batches_tracked"] = torch.tensor(7)

    def spconv(p, i, o, k=(3, 3, 3), bias=False):
        sd[f"{p}.weight"] = t(o, *k, i, scale=0.3 / np.sqrt(i * np.prod(k)) * 3)
        if kernel_layout == "1.x":
            sd[f"{p}.weight"] = sd[f"{p}.weight"].permute(1, 2, 3, 4, 0).contiguous()
        if bias:
            sd[f"{p}.bias"] = t(o)

    def block(p, c):
        for j in (1, 2):
            spconv(f"{p}.conv{j}", c, c, bias=True)
            bn(f"{p}.bn{j}", c)

    b = "backbone_3d"
    spconv(f"{b}.conv_input.0", 4, WIDTHS[0])
    bn(f"{b}.conv_input.1", WIDTHS[0])
    block(f"{b}.conv1.0", WIDTHS[0])
    block(f"{b}.conv1.1", WIDTHS[0])
    for n in (2, 3, 4):
        spconv(f"{b}.conv{n}.0.0", WIDTHS[n - 2], WIDTHS[n - 1])
        bn(f"{b}.conv{n}.0.1", WIDTHS[n - 1])
        block(f"{b}.conv{n}.1", WIDTHS[n - 1])
        block(f"{b}.conv{n}.2", WIDTHS[n - 1])
    spconv(f"{b}.conv_out.0", WIDTHS[3], OUT, k=(3, 1, 1))
    bn(f"{b}.conv_out.1", OUT)
    # BaseBEVBackbone: ZeroPad2d, conv (stride), BN, ReLU, then 5 x (conv, BN, ReLU); deblocks ConvTranspose2d + BN
    for i, (cin, f, up, s) in enumerate([(128, 128, 256, 1), (128, 256, 256, 2)]):
        sd[f"backbone_2d.blocks.{i}.1.weight"] = t(f, cin, 3, 3)
        bn(f"backbone_2d.blocks.{i}.2", f)
        for k in range(5):
            sd[f"backbone_2d.blocks.{i}.{4 + 3 * k}.weight"] = t(f, f, 3, 3)
            bn(f"backbone_2d.blocks.{i}.{5 + 3 * k}", f)
        sd[f"backbone_2d.deblocks.{i}.0.weight"] = t(f, up, s, s)
        bn(f"backbone_2d.deblocks.{i}.1", up)
    for name, k in (("cls", 3), ("box", 7), ("dir_cls", 2)):
        sd[f"dense_head.conv_{name}.weight"], sd[f"dense_head.conv_{name}.bias"] = t(6 * k, 512, 1, 1), t(6 * k)
    return sd


def parameters(sd: dict[str, torch.Tensor]) -> int:
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(v.numel() for k, v in sd.items() if not k.endswith(buffers))


def test_teacher_has_the_release_parameter_count():
    model = Second(4, 6, 3, grid_z=40)  # the KITTI teacher: SecondConfig's defaults are the release's
    total, biases = release_encoder_params()
    assert total == 1_219_296 and biases == 704
    # xmkd's sparse convs are bias-free (spconv's CPU eval refuses a bias); the release's 704 block-conv biases sit
    # in front of a BatchNorm, which removes them in training (zero gradient)
    assert sum(p.numel() for p in model.sparse.parameters()) == total - biases
    assert model.bev_height == 2 and isinstance(model.compress, torch.nn.Identity)  # 2 x 64 = 128 BEV channels
    whole = parameters(release_state(np.random.default_rng(0)))
    assert sum(p.numel() for p in model.parameters()) == whole - biases


def _encoder_inputs(rng):
    """A fully occupied 8 x 8 x 41 (x, y, z) grid: there a sparse conv equals the dense one with zero padding."""
    nx, ny, nz = 8, 8, 41
    x, y, z = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    coords = np.column_stack([np.zeros(x.size), x.ravel(), y.ravel(), z.ravel()]).astype(np.int32)
    feats = rng.normal(0, 1, (len(coords), 4)).astype(np.float32)
    return coords, feats, (nx, ny, nz)


def dense_release_encoder(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """VoxelResBackBone8x_c64 on a dense (1, C, Z, Y, X) volume, in the release's axis order and with its conv
    biases, written from the release's definition."""
    def conv(x, p, stride=1, padding=1, bias=False):
        w = sd[f"backbone_3d.{p}.weight"].permute(0, 4, 1, 2, 3)  # (out, kz, ky, kx, in) -> (out, in, kz, ky, kx)
        return F.conv3d(x, w, sd[f"backbone_3d.{p}.bias"] if bias else None, stride, padding)

    def bn(x, p):
        g = {k: sd[f"backbone_3d.{p}.{k}"] for k in ("running_mean", "running_var", "weight", "bias")}
        return F.batch_norm(x, g["running_mean"], g["running_var"], g["weight"], g["bias"], False, 0.0, 1e-3)

    def block(x, p):
        out = F.relu(bn(conv(x, f"{p}.conv1", bias=True), f"{p}.bn1"))
        return F.relu(bn(conv(out, f"{p}.conv2", bias=True), f"{p}.bn2") + x)

    x = F.relu(bn(conv(x, "conv_input.0"), "conv_input.1"))
    x = block(block(x, "conv1.0"), "conv1.1")
    for n, pad in ((2, 1), (3, 1), (4, (0, 1, 1))):
        x = F.relu(bn(conv(x, f"conv{n}.0.0", 2, pad), f"conv{n}.0.1"))
        x = block(block(x, f"conv{n}.1"), f"conv{n}.2")
    return F.relu(bn(conv(x, "conv_out.0", (2, 1, 1), 0), "conv_out.1"))


@pytest.mark.parametrize("layout", ["2.x", "1.x"])
def test_release_state_loads_and_the_encoder_computes_what_the_release_computes(layout):
    sd = release_state(np.random.default_rng(1), layout)
    model = Second(4, 6, 3, grid_z=40)
    model.load_state_dict(convert_release_state(sd, model))  # strict: every name accounted for
    model.eval()
    assert torch.equal(model.bev.head.dir.bias, sd["dense_head.conv_dir_cls.bias"])
    assert torch.equal(model.bev.backbone.blocks[1][3].weight, sd["backbone_2d.blocks.1.4.weight"])
    assert torch.equal(model.bev.backbone.ups[1][0].weight, sd["backbone_2d.deblocks.1.0.weight"])
    folded = model.sparse.conv2[1].bn1.running_mean
    assert torch.allclose(folded, sd["backbone_3d.conv2.1.bn1.running_mean"] - sd["backbone_3d.conv2.1.conv1.bias"])

    coords, feats, shape = _encoder_inputs(np.random.default_rng(2))
    with torch.no_grad():
        out, _ = model.sparse(sparse_tensor(torch.from_numpy(feats), torch.from_numpy(coords), shape, 1))
        dense = torch.zeros(1, 4, shape[2], shape[1], shape[0])
        dense[0, :, coords[:, 3], coords[:, 2], coords[:, 1]] = torch.from_numpy(feats).T
        ref = dense_release_encoder(release_state(np.random.default_rng(1), "2.x"), dense)
    assert ref.shape == (1, OUT, 2, 1, 1) and tuple(out.spatial_shape) == (1, 1, 2)
    got = torch.zeros_like(ref)
    idx = out.indices.long()
    got[0, :, idx[:, 3], idx[:, 2], idx[:, 1]] = out.features.T
    assert len(idx) == 2 and ref.abs().max() > 0.1
    assert torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * ref.abs().max())


def test_release_state_errors_name_the_entry():
    model = Second(4, 6, 3, grid_z=40)
    sd = release_state(np.random.default_rng(2))
    with pytest.raises(XmkdDataError, match="vfe.linear.weight"):
        convert_release_state({**sd, "vfe.linear.weight": torch.zeros(1)}, model)
    sd["dense_head.conv_cls.weight"] = torch.zeros(9, 512, 1, 1)  # a one-class head
    with pytest.raises(XmkdDataError, match="dense_head.conv_cls.weight.*shape"):
        convert_release_state(sd, model)
    del sd["dense_head.conv_cls.weight"]
    with pytest.raises(XmkdDataError, match="lacks 1"):
        convert_release_state(sd, model)


def test_qfl_targets_every_anchor_with_its_3d_iou_on_the_overlapped_box_class():
    from xmkd.geometry.iou import iou_3d
    from xmkd.models.det.anchors import KITTI_ANCHORS, anchor_classes, generate_anchors
    from xmkd.models.det.targets import assign, detection_losses, quality_targets
    from xmkd.models.losses import quality_focal_loss

    anchors = generate_anchors(KITTI_ANCHORS, (20, 20), [0.0, -8.0, -3.0, 16.0, 8.0, 1.0]).reshape(-1, 7)
    a_cls = anchor_classes(KITTI_ANCHORS).repeat(400)
    gt = torch.tensor([[6.1, 0.3, -1.0, 4.0, 1.7, 1.5, 0.2], [12.0, -4.0, -0.7, 0.8, 0.6, 1.7, 1.0]])
    labels = torch.tensor([0, 1])
    codes = torch.zeros(len(anchors), 7)  # each anchor predicts itself
    soft = quality_targets(codes, anchors, gt, labels, 3)
    iou = iou_3d(anchors, gt)
    best, which = iou.max(1)
    assert torch.allclose(soft.amax(1), best.float(), atol=1e-6)
    hit = best > 0
    assert torch.equal(soft[hit].argmax(1), labels[which[hit]])  # the box's class, whatever the anchor's class
    assert (a_cls[hit] != labels[which[hit]]).any()  # e.g. Pedestrian anchors inside the Car get Car targets
    assert (soft[~hit] == 0).all()
    t = assign(anchors, a_cls, KITTI_ANCHORS, gt, labels)
    logits = torch.randn(len(anchors), 3, generator=torch.Generator().manual_seed(0))
    losses = detection_losses(logits, codes, torch.zeros(len(anchors), 2), anchors, t, gt, labels)
    expected = 8.0 * quality_focal_loss(logits, soft) / hit.sum()  # weight 8, per positive (IoU > 0) anchor
    assert torch.allclose(losses["cls"], expected)
    ignored = torch.nonzero(t.labels == -2).squeeze(1)
    assert len(ignored)  # ignored by the assignment, still in the classification loss (as released)
    moved = logits.clone()
    moved[ignored] += 3.0
    assert not torch.allclose(detection_losses(moved, codes, torch.zeros(len(anchors), 2), anchors, t, gt,
                                               labels)["cls"], losses["cls"])


def test_nearest_bev_iou_turns_boxes_to_their_nearest_axis():
    from xmkd.geometry.iou import nearest_bev_iou

    a = np.array([[0, 0, 0, 4.0, 2.0, 1.5, 0.0]])
    turned = np.array([[0, 0, 0, 2.0, 4.0, 1.5, np.pi / 2], [0, 0, 0, 4.0, 2.0, 1.5, 0.6],
                       [0, 0, 0, 4.0, 2.0, 1.5, 1.0], [0, 0, 0, 4.0, 2.0, 1.5, np.pi]])
    # pi/2 with swapped sizes is the same footprint; 0.6 rad counts as axis-aligned; 1.0 rad as turned by pi/2
    assert np.allclose(nearest_bev_iou(a, turned)[0], [1.0, 1.0, 4.0 / 12.0, 1.0])


def test_boxes_and_points_kept_as_the_release_keeps_them():
    from xmkd.recipes.lidar_det import boxes_in_range, cap_voxels

    rng = [0.0, -10.0, -3.0, 20.0, 10.0, 1.0]
    boxes = np.array([[5, 0, -1, 4, 2, 1.5, 0], [21.5, 0, -1, 4, 2, 1.5, 0], [23, 0, -1, 4, 2, 1.5, 0]], np.float32)
    assert boxes_in_range(boxes, rng).tolist() == [True, True, False]  # centre outside, a corner inside: kept
    # voxels of 1 m: A gets 7 points, B 2, C 1, in scan order A, B, A, C, ...
    xyz = np.array([[0.5, 0.5, 0.5]] * 7 + [[1.5, 0.5, 0.5]] * 2 + [[2.5, 0.5, 0.5]], np.float32)
    order = np.array([0, 7, 1, 9, 2, 3, 8, 4, 5, 6])
    xyz = xyz[order]
    keep = cap_voxels(xyz, [1.0, 1.0, 1.0], [0, 0, 0, 4, 4, 4], 5, 2, None)  # evaluation: scan order
    assert sorted(np.floor(xyz[keep, 0]).astype(int).tolist()) == [0] * 5 + [1] * 2  # C opened third: dropped
    assert keep.tolist() == [0, 1, 2, 4, 5, 6, 7]  # A's first five, B's two
    g = np.random.default_rng(0)
    seen = set()
    for _ in range(20):  # training: a random walk order, so which voxels survive varies
        kept = np.floor(xyz[cap_voxels(xyz, [1.0, 1.0, 1.0], [0, 0, 0, 4, 4, 4], 5, 2, g), 0]).astype(int)
        counts = np.bincount(kept, minlength=3)
        assert (counts <= [5, 2, 1]).all() and (counts > 0).sum() == 2
        seen.add(tuple(counts > 0))
    assert len(seen) > 1
    assert len(cap_voxels(xyz, [1.0] * 3, [0, 0, 0, 4, 4, 4], 0, 0, None)) == 10


def test_classification_is_summed_over_the_batch_and_the_box_terms_averaged():
    from pathlib import Path

    from xmkd.config import load_config
    from xmkd.recipes import get_recipe

    recipe_cls = get_recipe("lidar_det")
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "lidar_det" / "synthetic.yaml",
                      ["data.root=unused"], schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    g = torch.Generator().manual_seed(0)
    out = {"cls": torch.randn(1, 32, 32, 6, 3, generator=g), "box": 0.1 * torch.randn(1, 32, 32, 6, 7, generator=g),
           "dir": torch.randn(1, 32, 32, 6, 2, generator=g)}
    gt = torch.tensor([[20.0, 3.0, -1.0, 4.0, 1.7, 1.5, 0.4]])
    one = recipe.gt_losses(out, {"gt_boxes": [gt], "gt_labels": [torch.tensor([0])], "labelled": torch.tensor([True])})
    two = recipe.gt_losses({k: v.repeat(2, 1, 1, 1, 1) for k, v in out.items()},
                           {"gt_boxes": [gt, gt], "gt_labels": [torch.tensor([0])] * 2,
                            "labelled": torch.tensor([True, True])})
    assert torch.allclose(two["cls"], 2 * one["cls"]) and torch.allclose(two["box"], one["box"])
    assert torch.allclose(two["dir"], one["dir"])


def test_load_second_checkpoint_reads_openpcdet_and_xmkd_files(tmp_path):
    from xmkd.recipes.lidar_det import load_second_checkpoint

    sd = release_state(np.random.default_rng(3))
    torch.save({"model_state": sd, "epoch": 80, "optimizer_state": {}}, tmp_path / "second_teacher.pth")
    model = Second(4, 6, 3, grid_z=40)
    assert load_second_checkpoint(model, tmp_path / "second_teacher.pth") == "openpcdet"
    assert torch.equal(model.bev.head.cls.weight, sd["dense_head.conv_cls.weight"])
    torch.save({"models": {"net": model.state_dict()}}, tmp_path / "last.pt")
    again = Second(4, 6, 3, grid_z=40)
    assert load_second_checkpoint(again, tmp_path / "last.pt") == "xmkd"
    assert torch.equal(again.sparse.conv4[2].bn2.running_mean, model.sparse.conv4[2].bn2.running_mean)
