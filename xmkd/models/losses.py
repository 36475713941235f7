"""Segmentation losses: cross-entropy with ignore, and the Lovasz-softmax surrogate of the per-class IoU
(Berman et al., CVPR 2018), averaged over the classes present in the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors."""
    p = gt_sorted.numel()
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """logits (N, C), labels (N,) -> Lovasz-softmax loss over the classes present in `labels`."""
    valid = labels != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    probs = F.softmax(logits[valid].float(), dim=1)
    labels = labels[valid]
    losses = []
    for c in torch.unique(labels):
        fg = (labels == c).float()
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    return torch.stack(losses).mean()


def seg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255,
             lovasz_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """CE + Lovasz-softmax (the U2MKD / SphereFormer segmentation loss), as named terms."""
    out = {"ce": F.cross_entropy(logits, labels, ignore_index=ignore_index)}
    if lovasz_weight:
        out["lovasz"] = lovasz_weight * lovasz_softmax(logits, labels, ignore_index)
    return out


def quality_focal_loss(logits: torch.Tensor, target: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Quality focal loss (sum over elements): BCE against soft targets in [0, 1] (an IoU, or a teacher's score),
    scaled by |target - sigmoid(logits)|^beta so that well-predicted elements fade out."""
    scale = (target - logits.sigmoid()).abs().pow(beta)
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * scale).sum()
