"""Anchor targets, the SECOND / CMKD detection losses, and decoding predictions into boxes.

Assignment (per class, rotated BEV IoU between that class's anchors and boxes): an anchor is foreground at
IoU >= `matched`, background below `unmatched`, ignored in between; every box also claims its best anchor.
Classification is the IoU-aware quality focal loss: a foreground anchor's soft target is the IoU between the
box it currently predicts and its ground truth. Boxes: smooth-L1 on the residual codes, the angle through
sin(pred - target) (SECOND), direction bins by cross-entropy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xmkd.geometry.iou import bev_iou
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


def assign(anchors: torch.Tensor, anchor_cls: torch.Tensor, classes: Sequence[AnchorClass], gt_boxes: torch.Tensor,
           gt_labels: torch.Tensor) -> Targets:
    """anchors (N, 7) with their class (N,); ground truth (M, 7) and class indices (M,) of one sample."""
    n = anchors.shape[0]
    labels = torch.full((n,), -1, dtype=torch.long, device=anchors.device)
    matched = torch.full((n,), -1, dtype=torch.long, device=anchors.device)
    for c, spec in enumerate(classes):
        a_idx = torch.nonzero(anchor_cls == c).squeeze(1)
        g_idx = torch.nonzero(gt_labels == c).squeeze(1)
        if len(g_idx) == 0 or len(a_idx) == 0:
            continue
        iou = bev_iou(anchors[a_idx], gt_boxes[g_idx]).to(anchors.dtype)  # (Na, Mg)
        best_iou, best_gt = iou.max(1)
        lab = torch.full((len(a_idx),), -2, dtype=torch.long, device=anchors.device)
        lab[best_iou < spec.unmatched] = -1
        fg = best_iou >= spec.matched
        per_gt_best = iou.max(0).values  # each box claims its best anchor(s)
        claim = (iou == per_gt_best[None]) & (per_gt_best[None] > 0)
        claim_any = claim.any(1)
        fg |= claim_any
        gt_of = torch.where(claim_any, claim.float().argmax(1), best_gt)
        lab[fg] = c
        labels[a_idx] = lab
        matched[a_idx[fg]] = g_idx[gt_of[fg]]
    boxes = torch.zeros_like(anchors)
    fg = matched >= 0
    boxes[fg] = gt_boxes[matched[fg]].to(anchors.dtype)
    codes = torch.zeros_like(anchors)
    codes[fg] = encode_boxes(boxes[fg], anchors[fg])
    direction = torch.zeros(n, dtype=torch.long, device=anchors.device)
    direction[fg] = direction_target(boxes[fg, 6])
    return Targets(labels, codes, direction, boxes)


def detection_losses(cls: torch.Tensor, box: torch.Tensor, dirs: torch.Tensor, anchors: torch.Tensor,
                     targets: Targets, num_classes: int, box_weight: float = 2.0, dir_weight: float = 0.2
                     ) -> dict[str, torch.Tensor]:
    """Per sample: logits (N, classes), box codes (N, 7), direction logits (N, bins) of all anchors."""
    fg = targets.labels >= 0
    valid = targets.labels >= -1
    norm = fg.sum().clamp(min=1).to(cls.dtype)
    soft = torch.zeros_like(cls)
    if fg.any():
        with torch.no_grad():
            pred = decode_boxes(box[fg], anchors[fg])
            iou = bev_iou(pred, targets.boxes[fg], aligned=True).to(cls.dtype).clamp(0, 1)
        soft[fg, targets.labels[fg]] = iou
    losses = {"cls": quality_focal_loss(cls[valid], soft[valid]) / norm}
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
