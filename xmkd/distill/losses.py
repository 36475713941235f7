"""Knowledge-distillation losses. Every target (teacher) tensor is detached here, so a loss can never send
gradients into a teacher, whatever the caller passes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_logits(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) * T^2, averaged over rows (N, C)."""
    if student.numel() == 0:
        return student.sum() * 0.0
    t = temperature
    target = F.softmax(teacher.detach().float() / t, dim=1)
    log_p = F.log_softmax(student.float() / t, dim=1)
    return F.kl_div(log_p, target, reduction="batchmean") * t * t


def kl_probs(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(student)) for a given (detached) target distribution (N, C)."""
    if student_logits.numel() == 0:
        return student_logits.sum() * 0.0
    return F.kl_div(F.log_softmax(student_logits.float(), 1), target_probs.detach().float(), reduction="batchmean")


def feature_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error to a detached target (feature imitation, imputation learners)."""
    if student.numel() == 0:
        return student.sum() * 0.0
    return F.mse_loss(student.float(), teacher.detach().float())
