"""HSRDN / CMKD building blocks: anchors and box coder, direction bins, rotated NMS, QFL, relation losses and the
frustum-to-voxel lifting."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from xmkd.distill.relations import cross_sample_nodes, relation_losses, within_sample_relations
from xmkd.geometry.iou import bev_iou
from xmkd.models.det.anchors import (
    KITTI_ANCHORS,
    anchor_classes,
    apply_direction,
    decode_boxes,
    direction_target,
    encode_boxes,
    generate_anchors,
    limit_period,
)
from xmkd.models.det.frustum import (
    depth_bin_targets,
    depth_to_lid,
    frustum_to_voxels,
    lid_to_depth,
    voxel_centres,
)
from xmkd.models.det.nms import rotated_nms
from xmkd.models.losses import quality_focal_loss

RANGE = [0.0, -40.0, -3.0, 70.4, 40.0, 1.0]


def test_anchors_span_the_range_as_released_and_the_coder_round_trips():
    anchors = generate_anchors(KITTI_ANCHORS, (200, 176), RANGE)
    assert anchors.shape == (200, 176, 6, 7)
    # align_center False (CMKD's teacher): first anchor on the range's corner, last on the opposite one
    assert torch.allclose(anchors[0, 0, 0, :2], torch.tensor([0.0, -40.0]), atol=1e-5)
    assert torch.allclose(anchors[-1, -1, 0, :2], torch.tensor([70.4, 40.0]), atol=1e-4)
    assert torch.allclose(anchors[0, 1, 0, 0], torch.tensor(70.4 / 175))
    assert anchors[0, 0, :, 6].tolist() == pytest.approx([0, 1.57] * 3)
    centred = generate_anchors([dataclasses.replace(c, align_center=True) for c in KITTI_ANCHORS], (200, 176), RANGE)
    assert torch.allclose(centred[0, 0, 0, :2], torch.tensor([0.2, -39.8]), atol=1e-5)  # at the cell centres
    assert torch.allclose(anchors[0, 0, 0, 2], torch.tensor(-1.78 + 1.56 / 2))
    assert anchor_classes(KITTI_ANCHORS).tolist() == [0, 0, 1, 1, 2, 2]
    g = torch.Generator().manual_seed(0)
    a = anchors.reshape(-1, 7)[torch.randint(0, 200 * 176 * 6, (500,), generator=g)]
    boxes = a + torch.randn(500, 7, generator=g) * torch.tensor([1, 1, 0.3, 0, 0, 0, 1.0])
    boxes[:, 3:6] = a[:, 3:6] * torch.exp(torch.randn(500, 3, generator=g) * 0.2)
    assert torch.allclose(decode_boxes(encode_boxes(boxes, a), a), boxes, atol=1e-4)
    assert torch.allclose(encode_boxes(a, a), torch.zeros(500, 7), atol=1e-6)


def test_direction_bin_resolves_the_half_turn():
    yaw = torch.linspace(-3 * math.pi, 3 * math.pi, 1001)
    bins = direction_target(yaw)
    assert set(bins.tolist()) == {0, 1}
    ambiguous = yaw + math.pi * torch.randint(-2, 3, yaw.shape)  # what the residual coder alone can recover
    fixed = apply_direction(ambiguous, bins)
    err = limit_period(fixed - yaw, 0.5, 2 * math.pi).abs()
    on_edge = limit_period(yaw - math.pi / 4, 0.5, math.pi).abs() < 1e-4  # on a bin boundary either bin is right
    assert (err[~on_edge] < 1e-4).all() and on_edge.sum() < 10


@pytest.mark.parametrize("n, extent, threshold, post_max", [(120, 20.0, 0.3, 500), (600, 8.0, 0.01, 500),
                                                            (600, 8.0, 0.01, 7), (300, 60.0, 0.5, 40)])
def test_rotated_nms_matches_a_brute_force_greedy_pass(n, extent, threshold, post_max):
    """The lazy pass (overlaps only of kept boxes against live candidates) keeps exactly what the full-matrix greedy
    pass keeps: sparse and dense (an untrained detector's pile of overlapping boxes at the release's 0.01) sets,
    with the post-NMS cap binding or not."""
    g = torch.Generator().manual_seed(n + post_max)
    boxes = torch.cat([torch.rand(n, 2, generator=g) * extent, torch.zeros(n, 1),
                       1 + 3 * torch.rand(n, 3, generator=g), torch.rand(n, 1, generator=g) * 6], 1)
    scores = torch.rand(n, generator=g)
    keep = rotated_nms(boxes, scores, threshold, post_max=post_max)
    iou = bev_iou(boxes.double().numpy(), boxes.double().numpy())
    ref = []
    for i in np.argsort(-scores.numpy(), kind="stable"):
        if len(ref) < post_max and all(iou[i, j] <= threshold for j in ref):
            ref.append(int(i))
    assert keep.tolist() == ref
    assert 1 < len(ref) <= post_max
    assert rotated_nms(boxes[:0], scores[:0], threshold).numel() == 0


def test_rotated_nms_pre_max_corners_and_threshold():
    boxes = torch.tensor([[0.0, 0, 0, 4, 2, 1.5, 0], [10, 0, 0, 4, 2, 1.5, 0], [20, 0, 0, 4, 2, 1.5, 0]])
    assert rotated_nms(boxes, torch.tensor([0.2, 0.9, 0.5]), 0.01, pre_max=2).tolist() == [1, 2]
    # squares overlapping only at their corners (IoU 0.032): the circle prefilter must not skip the pair
    corners = torch.tensor([[0.0, 0, 0, 4, 4, 1.5, 0], [3, 3, 0, 4, 4, 1.5, 0]])
    assert rotated_nms(corners, torch.tensor([0.9, 0.5]), 0.01).tolist() == [0]
    assert rotated_nms(corners, torch.tensor([0.9, 0.5]), 0.05).tolist() == [0, 1]
    with pytest.raises(ValueError, match="iou_threshold must lie in"):
        rotated_nms(boxes, torch.tensor([0.2, 0.9, 0.5]), -0.1)
    assert rotated_nms(boxes, torch.tensor([0.2, 0.9, 0.5]), 0.01, post_max=0).tolist() == []  # OpenPCDet: none
    assert rotated_nms(boxes, torch.tensor([0.2, 0.9, 0.5]), 0.01, pre_max=0).tolist() == []
    for bad in ({"pre_max": -1}, {"post_max": -1}):  # were: the last candidate dropped, one box kept
        with pytest.raises(ValueError, match="pre_max and post_max must be >= 0"):
            rotated_nms(boxes, torch.tensor([0.2, 0.9, 0.5]), 0.01, **bad)


def test_bev_iou_prefilter_keeps_touching_pairs_in_float32_far_from_the_origin():
    """Squares overlapping corner to corner by 2e-5 m at 40-50 m: torch.cdist's default matrix-product mode (above
    25 rows) rounded such pairs out of the circle prefilter in float32, so bev_iou scored them 0."""
    from xmkd.geometry.iou import _pair_indices

    g = torch.Generator().manual_seed(0)
    a = torch.cat([40 + 10 * torch.rand(200, 2, generator=g), torch.zeros(200, 1), torch.full((200, 3), 2.0),
                   torch.zeros(200, 1)], 1)
    b = a.clone()
    b[:, :2] += 2.0 - 2e-5
    ia, ib = _pair_indices(a, b)
    assert set(zip(range(200), range(200))) <= set(zip(ia.tolist(), ib.tolist()))


def test_quality_focal_loss_vanishes_at_the_target():
    target = torch.rand(10, 3)
    exact = torch.logit(target.clamp(1e-4, 1 - 1e-4))
    assert quality_focal_loss(exact, target) < 1e-6
    logits = torch.zeros(10, 3, requires_grad=True)
    quality_focal_loss(logits, target).backward()
    assert logits.grad.abs().sum() > 0


def test_relation_losses_train_the_student_not_the_teacher_at_batch_1_and_2():
    for batch in (1, 2):
        s = torch.randn(batch, 8, 10, 12, requires_grad=True)
        t = torch.randn(batch, 8, 10, 12, requires_grad=True)
        fg = (torch.rand(batch, 10, 12) > 0.6).float()
        losses = within_sample_relations(s, t, fg, max_nodes=16)
        assert losses["distance"] > 0 and losses["angle"] > 0
        sum(losses.values()).backward()
        assert s.grad.abs().sum() > 0 and t.grad is None
    # identical nodes -> zero loss; the released cross-sample form is degenerate at batch 2 (fewer than 3 nodes)
    x = torch.randn(20, 5)
    assert all(v.abs() < 1e-8 for v in relation_losses(x.clone().requires_grad_(), x).values())
    s2 = torch.randn(2, 4, 3, 3, requires_grad=True)
    assert all(v == 0 for v in cross_sample_nodes(s2, torch.randn(2, 4, 3, 3)).values())
    # from a batch of 3 on it has pairs and triplets: both terms non-zero, the gradient to the student only
    for batch in (3, 4):
        s, t = torch.randn(batch, 4, 3, 3, requires_grad=True), torch.randn(batch, 4, 3, 3, requires_grad=True)
        losses = cross_sample_nodes(s, t)
        assert losses["distance"] > 0 and losses["angle"] > 0
        assert all(torch.equal(v, relation_losses(s.flatten(1), t.flatten(1))[k]) for k, v in losses.items())
        sum(losses.values()).backward()
        assert s.grad.abs().sum() > 0 and t.grad is None


def test_relation_gradient_stays_bounded_when_the_student_collapses():
    torch.manual_seed(0)
    teacher, direction = torch.randn(32, 16), torch.randn(32, 16)

    def grad_norm(spread: float, floor: float) -> float:
        s = (direction * spread).requires_grad_()
        sum(relation_losses(s, teacher, floor).values()).backward()
        return float(s.grad.norm())

    # plain RKD (floor 0): the gradient of the same relations grows as 1 / spread
    assert grad_norm(1e-3, 0.0) > 100 * grad_norm(1.0, 0.0)
    # floored at 0.1 x the teacher's mean distance: the gradient stops growing once the student is below the floor
    assert grad_norm(1e-5, 0.1) < 1.01 * grad_norm(1e-3, 0.1) < grad_norm(1e-3, 0.0) / 10
    # a student spread beyond the floor gets exactly the RKD relations (and so the same losses)
    s = direction * 2.0
    plain, floored = relation_losses(s, teacher, 0.0), relation_losses(s, teacher, 0.1)
    assert torch.isclose(plain["distance"], floored["distance"])
    assert torch.isclose(plain["angle"], floored["angle"], rtol=1e-3)


def test_lid_bins_round_trip_and_out_of_range_bin():
    d = torch.tensor([2.0, 5.0, 20.0, 46.79, 1.0, 50.0, 0.0])
    idx = depth_to_lid(d[:4], 2.0, 46.8, 120)
    assert torch.allclose(lid_to_depth(idx, 2.0, 46.8, 120), d[:4], atol=1e-3)
    assert abs(float(depth_to_lid(torch.tensor(46.8), 2.0, 46.8, 120)) - 120) < 1e-3
    bins = depth_bin_targets(d, 2.0, 46.8, 120)
    assert bins[:4].tolist() == torch.floor(idx).long().tolist() and bins[4:].tolist() == [120, 120, 120]


def test_frustum_to_voxel_maps_a_point_to_its_pixel_and_depth_bin():
    # frustum features that are linear in (column, row, depth bin): trilinear sampling returns them exactly, at the
    # continuous cell coordinate whose integer values are the cell centres (pixel j + 1/2, LID bin i + 1/2)
    d, h, w = 40, 60, 80
    bins, rows, cols = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    frustum = torch.stack([cols, rows, bins]).float()[None]  # (1, 3, D, H, W)
    K = torch.tensor([[50.0, 0, 40], [0, 50.0, 30], [0, 0, 1]])
    T = torch.tensor([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]])  # LiDAR x forward -> camera z
    P = (K @ T)[None]
    rng = [4.0, -4.0, -2.0, 20.0, 4.0, 2.0]
    centres = voxel_centres(rng, (4, 8, 16))
    out = frustum_to_voxels(frustum, centres, P, stride=1.0, depth_min=2.0, depth_max=30.0)
    assert out.shape == (1, 3, 4, 8, 16)
    x, y, z = centres[2, 5, 9]
    u, v = 40 + 50 * (-y) / x, 30 + 50 * (-z) / x
    k = depth_to_lid(torch.tensor(float(x)), 2.0, 30.0, d)
    assert torch.allclose(out[0, :, 2, 5, 9], torch.stack([u, v, k]).float() - 0.5, atol=1e-3)
    # a voxel behind the camera gets nothing
    behind = frustum_to_voxels(frustum, torch.tensor([[[[-5.0, 0.0, 0.0]]]]), P, 1.0, 2.0, 30.0)
    assert behind.abs().sum() == 0


def test_second_forward_backward_and_grid_arithmetic():
    from xmkd.data.collate import voxel_batch
    from xmkd.models.det.second import Second, SecondConfig

    rng = np.random.default_rng(0)
    point_range = [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
    voxel = [0.2, 0.2, 0.1]  # grid 128 x 128 x 40
    xyz = [np.column_stack([rng.uniform(0, 25.6, 3000), rng.uniform(-12.8, 12.8, 3000), rng.uniform(-3, 1, 3000)])
           .astype(np.float32) for _ in range(2)]
    batch = voxel_batch(xyz, [np.column_stack([p, rng.random(len(p))]).astype(np.float32) for p in xyz], voxel,
                        point_range, multiple=8)
    assert batch["spatial_shape"].tolist() == [128, 128, 40]
    cfg = SecondConfig(widths=[8, 16, 16, 16], out_channels=16, bev_channels=32, bev_layers=[1, 1],
                       bev_filters=[32, 64], up_filters=[32, 32])
    model = Second(4, 6, 3, grid_z=40, cfg=cfg)
    # 40 + 1 z voxels (the release's padded sparse shape) leave 2 heights: 2 x 16 = 32 BEV channels
    assert model.bev_height == 2 and isinstance(model.compress, torch.nn.Identity)
    out = model(batch)
    assert out["bev"].shape == (2, 32, 16, 16)
    assert out["cls"].shape == (2, 16, 16, 6, 3) and out["box"].shape == (2, 16, 16, 6, 7)
    assert out["dir"].shape == (2, 16, 16, 6, 2)
    (out["cls"].sum() + out["box"].sum() + out["dir"].sum()).backward()
    assert model.sparse.conv_input[0].weight.grad.abs().sum() > 0
    assert all(b.conv2.weight.grad.abs().sum() > 0 for b in model.sparse.conv4[1:])  # through the residual blocks
    plain = Second(4, 6, 3, grid_z=40, cfg=SecondConfig(backbone="plain8x", out_channels=128))
    assert plain.bev_height == 2 and not isinstance(plain.compress, torch.nn.Identity)  # 256 -> 1x1 conv -> 128


def test_height_compression_stacks_channels_per_height():
    from xmkd.models.det.second import height_compression
    from xmkd.ops.sparse import sparse_tensor

    coords = torch.tensor([[0, 3, 1, 0], [0, 3, 1, 1], [1, 0, 2, 1]])  # (batch, x, y, z)
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    bev = height_compression(sparse_tensor(feats, coords, [4, 3, 2], 2))
    assert bev.shape == (2, 4, 3, 4)  # (B, C * Z, Y, X)
    assert bev[0, :, 1, 3].tolist() == [1.0, 3.0, 2.0, 4.0]  # channel c, height z -> c * Z + z
    assert bev[1, :, 2, 0].tolist() == [0.0, 5.0, 0.0, 6.0]
    assert bev.abs().sum() == feats.sum()


def test_targets_losses_and_decoding_recover_the_boxes():
    from xmkd.models.det.targets import assign, decode_predictions, detection_losses

    rng = [0.0, -10.0, -3.0, 20.0, 10.0, 1.0]
    anchors = generate_anchors(KITTI_ANCHORS, (25, 25), rng).reshape(-1, 7)
    a_cls = anchor_classes(KITTI_ANCHORS).repeat(25 * 25)
    gt = torch.tensor([[10.2, 2.1, -1.0, 4.0, 1.7, 1.5, 0.3], [5.0, -4.0, -0.8, 0.8, 0.6, 1.7, 2.0]])
    gt_cls = torch.tensor([0, 1])
    t = assign(anchors, a_cls, KITTI_ANCHORS, gt, gt_cls)
    assert (t.labels == 0).sum() >= 1 and (t.labels == 1).sum() >= 1  # each box claims at least its best anchor
    assert ((t.labels >= 0) & (a_cls != t.labels)).sum() == 0  # an anchor only matches boxes of its own class
    fg = t.labels >= 0
    assert torch.allclose(decode_boxes(t.codes[fg], anchors[fg]), t.boxes[fg], atol=1e-4)
    # a perfect prediction: codes = targets, confident on foreground -> the decoded boxes are the ground truth
    n = len(anchors)
    cls = torch.full((n, 3), -8.0)
    cls[fg, t.labels[fg]] = 8.0
    box = t.codes.clone()
    dirs = torch.zeros(n, 2)
    dirs[torch.arange(n), t.direction] = 5.0
    losses = detection_losses(cls, box, dirs, anchors, t, gt, gt_cls)
    assert losses["box"] < 1e-6 and losses["dir"] < 0.01
    out = decode_predictions(cls, box, dirs, anchors, nms_threshold=0.1)
    assert len(out["boxes"]) == 2
    order = torch.argsort(out["labels"])
    assert torch.allclose(out["boxes"][order], gt, atol=1e-3) and out["labels"][order].tolist() == [0, 1]
    # gradients reach every head from a random start
    cls_r, box_r, dir_r = (torch.randn(n, 3, requires_grad=True), torch.randn(n, 7, requires_grad=True) * 0.1,
                           torch.randn(n, 2, requires_grad=True))
    losses = detection_losses(cls_r, box_r, dir_r, anchors, t, gt, gt_cls)
    sum(losses.values()).backward()
    assert cls_r.grad.abs().sum() > 0 and dir_r.grad.abs().sum() > 0
