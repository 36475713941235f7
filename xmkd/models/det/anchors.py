"""Per-class anchors on a BEV grid, SECOND's residual box coder and the direction-bin targets.

Boxes are (x, y, z, dx, dy, dz, yaw) in the LiDAR frame with z at the box centre (OpenPCDet's convention).
Each class has one size, one bottom height and the rotations 0 and 1.57 (the release's value of pi/2). Anchors sit
where OpenPCDet's `align_center: False` (CMKD's second_teacher.yaml) puts them, n anchors spread evenly from the
range's first edge to its last, x0 + i * (x1 - x0) / (n - 1) [OpenPCDet: pcdet/models/dense_heads/target_assigner/
anchor_generator.py:25-39]; `align_center: True` puts them at the BEV cell centres, x0 + (i + 1/2) * stride.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class AnchorClass:
    name: str
    size: list[float]  # dx (length), dy (width), dz (height)
    bottom: float  # z of the anchor's bottom face (m)
    matched: float  # IoU at or above which an anchor is foreground
    unmatched: float  # IoU below which it is background
    rotations: list[float] = field(default_factory=lambda: [0.0, 1.57])
    align_center: bool = False  # True: at the BEV cell centres; False: edge to edge, as released


KITTI_ANCHORS = [
    AnchorClass("Car", [3.9, 1.6, 1.56], -1.78, 0.6, 0.45),
    AnchorClass("Pedestrian", [0.8, 0.6, 1.73], -0.6, 0.5, 0.35),
    AnchorClass("Cyclist", [1.76, 0.6, 1.73], -0.6, 0.5, 0.35),
]


def generate_anchors(classes: Sequence[AnchorClass], grid: tuple[int, int], point_range: Sequence[float],
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """(ny, nx, A, 7) anchors for a BEV map of `grid` = (ny, nx) cells over `point_range`; A = classes x rotations,
    ordered class-major (class 0 rotation 0, class 0 rotation 1, class 1 ...)."""
    ny, nx = grid
    x0, y0, _, x1, y1, _ = (float(v) for v in point_range)

    def positions(lo: float, hi: float, n: int, centred: bool) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32, device=device)
        return lo + (i + 0.5) * (hi - lo) / n if centred else lo + i * (hi - lo) / max(n - 1, 1)

    per = []
    for c in classes:
        yy, xx = torch.meshgrid(positions(y0, y1, ny, c.align_center), positions(x0, x1, nx, c.align_center),
                                indexing="ij")
        for rot in c.rotations:
            a = torch.empty(ny, nx, 7, device=device)
            a[..., 0], a[..., 1] = xx, yy
            a[..., 2] = c.bottom + c.size[2] / 2
            a[..., 3:6] = torch.tensor(c.size, dtype=torch.float32, device=device)
            a[..., 6] = rot
            per.append(a)
    return torch.stack(per, dim=2)


def anchor_classes(classes: Sequence[AnchorClass]) -> torch.Tensor:
    """(A,) class index of each anchor slot, in `generate_anchors` order."""
    return torch.tensor([i for i, c in enumerate(classes) for _ in c.rotations], dtype=torch.long)


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """SECOND's residual coding of boxes (..., 7) against anchors (..., 7)."""
    diag = torch.sqrt(anchors[..., 3] ** 2 + anchors[..., 4] ** 2)
    return torch.stack([
        (boxes[..., 0] - anchors[..., 0]) / diag,
        (boxes[..., 1] - anchors[..., 1]) / diag,
        (boxes[..., 2] - anchors[..., 2]) / anchors[..., 5],
        torch.log(boxes[..., 3] / anchors[..., 3]),
        torch.log(boxes[..., 4] / anchors[..., 4]),
        torch.log(boxes[..., 5] / anchors[..., 5]),
        boxes[..., 6] - anchors[..., 6],
    ], dim=-1)


def decode_boxes(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of `encode_boxes`."""
    diag = torch.sqrt(anchors[..., 3] ** 2 + anchors[..., 4] ** 2)
    return torch.stack([
        codes[..., 0] * diag + anchors[..., 0],
        codes[..., 1] * diag + anchors[..., 1],
        codes[..., 2] * anchors[..., 5] + anchors[..., 2],
        torch.exp(codes[..., 3]) * anchors[..., 3],
        torch.exp(codes[..., 4]) * anchors[..., 4],
        torch.exp(codes[..., 5]) * anchors[..., 5],
        codes[..., 6] + anchors[..., 6],
    ], dim=-1)


def limit_period(angle: torch.Tensor, offset: float = 0.5, period: float = math.pi) -> torch.Tensor:
    """angle wrapped into [-offset * period, (1 - offset) * period)."""
    return angle - torch.floor(angle / period + offset) * period


DIR_OFFSET = math.pi / 4  # SECOND's direction-bin offset


def direction_target(yaw: torch.Tensor, bins: int = 2) -> torch.Tensor:
    """Direction bin of a heading (SECOND / OpenPCDet): which of `bins` sectors, starting at DIR_OFFSET, it is in.
    The residual coder cannot tell yaw from yaw + pi; this bin can."""
    rel = limit_period(yaw - DIR_OFFSET, 0.0, 2 * math.pi)
    return torch.clamp(torch.floor(rel / (2 * math.pi / bins)).long(), 0, bins - 1)


def apply_direction(yaw: torch.Tensor, direction: torch.Tensor, bins: int = 2) -> torch.Tensor:
    """A decoded yaw moved into the sector of its predicted direction bin."""
    period = 2 * math.pi / bins
    return limit_period(yaw - DIR_OFFSET, 0.0, period) + DIR_OFFSET + period * direction.to(yaw.dtype)
