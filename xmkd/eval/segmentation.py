"""Confusion-matrix accumulator and IoU for semantic segmentation, under both conventions in use.

The matrix is (C + 1) x (C + 1), rows = ground truth, columns = prediction; index C collects the ignore
label (and any id outside 0..C-1), so both conventions can be read from one accumulation:

- ``"nuscenes"`` (nuscenes-devkit `ConfusionMatrix(num_classes, ignore_idx)`): ignore rows *and* columns are
  dropped; a class absent from both ground truth and prediction has IoU NaN and is left out of the mean.
- ``"semantickitti"`` (semantic-kitti-api `iouEval`): only ignore ground truth is dropped (a prediction of
  ignore on a labelled point is a false negative); an absent class scores 0 and the mean runs over all C.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CONVENTIONS = ("nuscenes", "semantickitti")


class ConfusionMatrix:
    """Accumulates (ground truth, prediction) pairs; numpy or torch inputs; mergeable across processes."""

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Sequence[str] | None = None):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: Any, gt: Any) -> None:
        """Add predictions and ground truth of the same shape (class ids; ignore or out-of-range -> C)."""
        c = self.num_classes
        if isinstance(pred, np.ndarray) or isinstance(gt, np.ndarray):
            pred = np.asarray(pred).reshape(-1).astype(np.int64)
            gt = np.asarray(gt).reshape(-1).astype(np.int64)
            if pred.shape != gt.shape:
                raise ValueError(f"prediction has {pred.size} values, ground truth {gt.size}")
            pred = np.where((pred >= 0) & (pred < c), pred, c)
            gt = np.where((gt >= 0) & (gt < c), gt, c)
            counts = np.bincount(gt * (c + 1) + pred, minlength=(c + 1) ** 2)
        else:
            import torch

            pred = pred.reshape(-1).long()
            gt = gt.reshape(-1).long()
            if pred.shape != gt.shape:
                raise ValueError(f"prediction has {pred.numel()} values, ground truth {gt.numel()}")
            pred = torch.where((pred >= 0) & (pred < c), pred, torch.full_like(pred, c))
            gt = torch.where((gt >= 0) & (gt < c), gt, torch.full_like(gt, c))
            counts = torch.bincount(gt * (c + 1) + pred, minlength=(c + 1) ** 2).cpu().numpy()
        self.matrix += counts.reshape(c + 1, c + 1)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another accumulator's counts into this one (e.g. from another worker) and return self."""
        if other.matrix.shape != self.matrix.shape:
            raise ValueError(f"cannot merge {other.matrix.shape} into {self.matrix.shape}")
        self.matrix += other.matrix
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts over all processes of an initialised torch.distributed group (no-op otherwise)."""
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            t = torch.from_numpy(self.matrix).to(device)
            dist.all_reduce(t)
            self.matrix = t.cpu().numpy()
        return self

    # -- statistics ----------------------------------------------------------------------------------

    def _stats(self, convention: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        c = self.num_classes
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)[:c]
        if convention == "nuscenes":
            core = m[:c, :c]
            fn = core.sum(1) - tp
            fp = core.sum(0) - tp
        else:
            fn = m[:c, :].sum(1) - tp  # a prediction of ignore on a labelled point is a miss
            fp = m[:c, :c].sum(0) - tp
        return tp, fp, fn

    def iou(self, convention: str = "nuscenes") -> np.ndarray:
        """(C,) IoU per class; NaN (nuscenes) or 0 (semantickitti) for classes absent from GT and prediction."""
        tp, fp, fn = self._stats(convention)
        denom = tp + fp + fn
        if convention == "semantickitti":
            return tp / (denom + 1e-15)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)

    def miou(self, convention: str = "nuscenes") -> float:
        iou = self.iou(convention)
        if convention == "semantickitti":
            return float(iou.mean())
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def accuracy(self, convention: str = "nuscenes") -> float:
        """Overall accuracy: correct / labelled points (semantickitti: / points predicted as a class)."""
        tp, fp, fn = self._stats(convention)
        denom = tp.sum() + (fp.sum() if convention == "semantickitti" else fn.sum())
        return float(tp.sum() / denom) if denom > 0 else float("nan")

    def class_counts(self) -> np.ndarray:
        """(C,) number of labelled ground-truth points per class."""
        return self.matrix[: self.num_classes, :].sum(1)

    def to_dict(self, convention: str = "nuscenes") -> dict[str, Any]:
        """JSON-friendly summary: mIoU, accuracy and per-class IoU (None for NaN), all in [0, 1]."""
        iou = self.iou(convention)
        return {
            "convention": convention,
            "miou": _nan_to_none(self.miou(convention)),
            "accuracy": _nan_to_none(self.accuracy(convention)),
            "iou_per_class": {n: _nan_to_none(float(v)) for n, v in zip(self.class_names, iou)},
        }

    def table(self, convention: str = "nuscenes", title: str | None = None) -> str:
        """A printable per-class table (IoU in percent, ground-truth point counts)."""
        iou = self.iou(convention)
        counts = self.class_counts()
        width = max(12, *(len(n) for n in self.class_names))
        lines = [title] if title else []
        lines.append(f"{'class':<{width}}  {'IoU %':>7}  {'GT points':>12}")
        lines.append("-" * (width + 23))
        for name, v, n in zip(self.class_names, iou, counts):
            shown = "    n/a" if np.isnan(v) else f"{100 * v:7.2f}"
            lines.append(f"{name:<{width}}  {shown}  {n:>12d}")
        lines.append("-" * (width + 23))
        lines.append(f"{'mIoU':<{width}}  {100 * self.miou(convention):7.2f}  ({convention} convention)")
        lines.append(f"{'accuracy':<{width}}  {100 * self.accuracy(convention):7.2f}")
        return "\n".join(lines)


def _nan_to_none(v: float) -> float | None:
    return None if np.isnan(v) else float(v)
