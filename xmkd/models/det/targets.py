"""Anchor targets, the SECOND / CMKD detection losses, and decoding predictions into boxes.

Assignment (OpenPCDet's AxisAlignedTargetAssigner; per class, between that class's anchors and boxes): an anchor is
foreground at IoU >= `matched`, background below `unmatched`, ignored in between, and every box also makes its
best anchor(s) foreground; a foreground anchor regresses to the box it overlaps most. The IoU is the release's
nearest-axis BEV IoU (`iou="nearest_bev"`) or the exact rotated one (`iou="rotated"`).
Classification is CMKD's IoU-aware quality focal loss over *all* anchors [CMKD: pcdet/models/dense_heads/
anchor_head_single_qfl.py:45-99]: an anchor's soft target is the 3D IoU between the box it currently predicts
(detached) and the ground-truth box it overlaps most, on that box's class; the sum is divided by the number of
anchors with a non-zero IoU. Boxes: smooth-L1 (beta 1/9) on the residual codes of the foreground anchors, the angle
through sin(pred - target) (SECOND), direction bins by cross-entropy, both divided by the foreground count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xmkd.geometry.iou import bev_iou, iou_3d, nearest_bev_iou
from xmkd.models.det.anchors import (
    AnchorClass,
    apply_direction,
    decode_boxes,
    direction_target,
    encode_boxes,
    limit_period,
)
from xmkd.models.det.nms import rotated_nms
from xmkd.models.losses import quality_focal_loss


@dataclass
class Targets:
    labels: torch.Tensor  # (N,) class index, -1 background, -2 ignored
    codes: torch.Tensor  # (N, 7) box codes of the matched box (zeros elsewhere)
    direction: torch.Tensor  # (N,) direction bin of the matched box
    boxes: torch.Tensor  # (N, 7) matched box (zeros elsewhere)


ASSIGN_IOU = {"nearest_bev": nearest_bev_iou, "rotated": bev_iou}


def assign(anchors: torch.Tensor, anchor_cls: torch.Tensor, classes: Sequence[AnchorClass], gt_boxes: torch.Tensor,
           gt_labels: torch.Tensor, iou: str = "nearest_bev") -> Targets:
    """anchors (N, 7) with their class (N,); ground truth (M, 7) and class indices (M,) of one sample
    [OpenPCDet: pcdet/models/dense_heads/target_assigner/axis_aligned_target_assigner.py:132-210]."""
    if iou not in ASSIGN_IOU:
        raise ValueError(f"assignment IoU {iou!r}: expected one of {', '.join(ASSIGN_IOU)}")
    n = anchors.shape[0]
    labels = torch.full((n,), -1, dtype=torch.long, device=anchors.device)
    matched = torch.full((n,), -1, dtype=torch.long, device=anchors.device)
    for c, spec in enumerate(classes):
        a_idx = torch.nonzero(anchor_cls == c).squeeze(1)
        g_idx = torch.nonzero(gt_labels == c).squeeze(1)
        if len(g_idx) == 0 or len(a_idx) == 0:
            continue
        overlap = ASSIGN_IOU[iou](anchors[a_idx], gt_boxes[g_idx].to(anchors.dtype)).to(anchors.dtype)  # (Na, Mg)
        best_iou, best_gt = overlap.max(1)
        lab = torch.full((len(a_idx),), -2, dtype=torch.long, device=anchors.device)
        lab[best_iou < spec.unmatched] = -1
        fg = best_iou >= spec.matched
        per_gt_best = overlap.max(0).values  # each box makes its best anchor(s) foreground
        fg |= ((overlap == per_gt_best[None]) & (per_gt_best[None] > 0)).any(1)
        lab[fg] = c
        labels[a_idx] = lab
        matched[a_idx[fg]] = g_idx[best_gt[fg]]  # as released: the box the anchor overlaps most
    boxes = torch.zeros_like(anchors)
    fg = matched >= 0
    boxes[fg] = gt_boxes[matched[fg]].to(anchors.dtype)
    codes = torch.zeros_like(anchors)
    codes[fg] = encode_boxes(boxes[fg], anchors[fg])
    direction = torch.zeros(n, dtype=torch.long, device=anchors.device)
    direction[fg] = direction_target(boxes[fg, 6])
    return Targets(labels, codes, direction, boxes)


@torch.no_grad()
def quality_targets(box: torch.Tensor, anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                    num_classes: int) -> torch.Tensor:
    """(N, classes) soft class targets of all anchors: the 3D IoU of each anchor's decoded box (N, 7 codes) with
    the ground-truth box (M, 7) it overlaps most, on that box's class (M,); zero elsewhere."""
    soft = box.new_zeros((box.shape[0], num_classes))
    if len(gt_boxes) == 0:
        return soft
    overlap = iou_3d(decode_boxes(box, anchors), gt_boxes.to(box.dtype)).to(box.dtype)  # (N, M)
    best, which = overlap.max(1)
    soft[torch.arange(len(best), device=box.device), gt_labels.to(box.device)[which]] = best.clamp(0, 1)
    return soft


def detection_losses(cls: torch.Tensor, box: torch.Tensor, dirs: torch.Tensor, anchors: torch.Tensor,
                     targets: Targets, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, box_weight: float = 2.0,
                     dir_weight: float = 0.2, cls_weight: float = 8.0) -> dict[str, torch.Tensor]:
    """Per sample: logits (N, classes), box codes (N, 7), direction logits (N, bins) of all anchors, their
    assignment, and the sample's ground truth (M, 7) with class indices (M,). Weights: CMKD's second_teacher.yaml
    (cls 8, loc 2, dir 0.2)."""
    fg = targets.labels >= 0
    norm = fg.sum().clamp(min=1).to(cls.dtype)
    soft = quality_targets(box.detach(), anchors, gt_boxes, gt_labels, cls.shape[1])
    positives = (soft.amax(1) > 0).sum().clamp(min=1).to(cls.dtype)
    losses = {"cls": cls_weight * quality_focal_loss(cls, soft) / positives}
    if fg.any():
        p, t = box[fg], targets.codes[fg]
        p = torch.cat([p[:, :6], torch.sin(p[:, 6:] - t[:, 6:])], 1)  # sin(a - b): the angle loss of SECOND
        t = torch.cat([t[:, :6], torch.zeros_like(t[:, 6:])], 1)
        losses["box"] = box_weight * F.smooth_l1_loss(p, t, beta=1 / 9, reduction="sum") / norm
        losses["dir"] = dir_weight * F.cross_entropy(dirs[fg], targets.direction[fg])
    else:
        losses["box"] = box.sum() * 0
        losses["dir"] = dirs.sum() * 0
    return losses


@torch.no_grad()
def decode_predictions(cls: torch.Tensor, box: torch.Tensor, dirs: torch.Tensor, anchors: torch.Tensor,
                       score_threshold: float = 0.1, nms_threshold: float = 0.01, pre_max: int = 4096,
                       post_max: int = 500) -> dict[str, torch.Tensor]:
    """One sample's anchor outputs -> boxes (K, 7), scores (K,), labels (K,) after class-agnostic rotated NMS."""
    scores, labels = cls.sigmoid().max(1)
    keep = scores >= score_threshold
    boxes = decode_boxes(box[keep], anchors[keep])
    boxes[:, 6] = limit_period(apply_direction(boxes[:, 6], dirs[keep].argmax(1)), 0.5, 2 * math.pi)  # [-pi, pi)
    scores, labels = scores[keep], labels[keep]
    kept = rotated_nms(boxes, scores, nms_threshold, pre_max, post_max)
    return {"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]}
