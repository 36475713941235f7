"""Greedy non-maximum suppression of rotated boxes in bird's-eye view, on CPU or GPU (plain torch)."""

from __future__ import annotations

import torch

from xmkd.geometry.iou import bev_iou


def rotated_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, pre_max: int = 4096,
                post_max: int = 500) -> torch.Tensor:
    """Indices (into `boxes`) of the kept boxes, by decreasing score. boxes (N, 7), scores (N,)."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True)[:pre_max]
    iou = bev_iou(boxes[order], boxes[order])  # (K, K), exact rotated overlap
    over = (iou > iou_threshold).cpu()
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) >= post_max:
            break
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]
