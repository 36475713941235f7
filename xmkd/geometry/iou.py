"""Exact IoU of axis-aligned 2D boxes, rotated BEV boxes and 3D boxes (rotated in yaw).

Rotated overlap is the exact area of the intersection of two convex polygons. Every vertex of that
intersection is either a vertex of one polygon lying inside the other, or a crossing of two edges; the
routine gathers those candidates for many pairs at once, orders them by angle around their centroid and
integrates the shoelace formula. All pairs are processed as one batch of tensor operations (CPU or CUDA,
no custom kernels); numpy inputs are computed in float64 and come back as numpy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xmkd.geometry.boxes import bev_corners

_EPS = 1e-9


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside(points: torch.Tensor, poly: torch.Tensor) -> torch.Tensor:
    """(P, A, 2) points, (P, K, 2) convex CCW polygons -> (P, A) bool, boundary included."""
    edges = torch.roll(poly, -1, dims=1) - poly  # (P, K, 2)
    rel = points[:, :, None, :] - poly[:, None, :, :]  # (P, A, K, 2)
    scale = edges.norm(dim=-1)[:, None, :] + _EPS
    return (_cross(edges[:, None], rel) / scale >= -1e-7).all(-1)


def convex_intersection_area(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Area of the intersection of paired convex polygons p (P, K, 2) and q (P, L, 2), both CCW -> (P,)."""
    n_pairs = p.shape[0]
    if n_pairs == 0:
        return p.new_zeros(0)
    p_in_q = _inside(p, q)  # (P, K)
    q_in_p = _inside(q, p)  # (P, L)
    a, b = p, torch.roll(p, -1, dims=1)
    c, d = q, torch.roll(q, -1, dims=1)
    r = (b - a)[:, :, None, :]  # (P, K, 1, 2)
    s = (d - c)[:, None, :, :]  # (P, 1, L, 2)
    ca = c[:, None, :, :] - a[:, :, None, :]  # (P, K, L, 2)
    denom = _cross(r, s)
    ok = denom.abs() > _EPS
    safe = torch.where(ok, denom, torch.ones_like(denom))
    t = _cross(ca, s) / safe
    u = _cross(ca, r) / safe
    tol = 1e-9
    hit = ok & (t >= -tol) & (t <= 1 + tol) & (u >= -tol) & (u <= 1 + tol)
    cross_pts = a[:, :, None, :] + t[..., None] * r  # (P, K, L, 2)

    pts = torch.cat([p, q, cross_pts.reshape(n_pairs, -1, 2)], 1)  # (P, C, 2)
    valid = torch.cat([p_in_q, q_in_p, hit.reshape(n_pairs, -1)], 1)  # (P, C)
    count = valid.sum(1)
    w = valid.to(pts.dtype)[..., None]
    centroid = (pts * w).sum(1) / count.clamp(min=1)[:, None].to(pts.dtype)
    rel = pts - centroid[:, None, :]
    angle = torch.atan2(rel[..., 1], rel[..., 0])
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))  # invalid candidates sort last
    order = angle.argsort(dim=1)
    rel = torch.gather(rel, 1, order[..., None].expand(-1, -1, 2))
    valid_sorted = torch.gather(valid, 1, order)
    # Invalid slots repeat the first vertex: they add zero-length edges, which closes the polygon exactly.
    rel = torch.where(valid_sorted[..., None], rel, rel[:, :1, :].expand_as(rel))
    area = 0.5 * _cross(rel, torch.roll(rel, -1, dims=1)).sum(1)
    return torch.where(count >= 3, area.abs(), torch.zeros_like(area))


def _as_tensor(x: Any) -> tuple[torch.Tensor, bool]:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)), True
    return x, False


def _pair_indices(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i, j) whose BEV circumscribed circles overlap; other pairs have zero overlap."""
    ra = 0.5 * torch.hypot(a[:, 3], a[:, 4])
    rb = 0.5 * torch.hypot(b[:, 3], b[:, 4])
    # torch.cdist's default switches to a matrix-product formula above 25 rows, whose float32 rounding (~1e-5 m at
    # tens of metres) dropped touching pairs; the direct difference is exact enough
    dist = torch.cdist(a[:, :2], b[:, :2], compute_mode="donot_use_mm_for_euclid_dist")
    return torch.nonzero(dist <= ra[:, None] + rb[None, :] + 1e-6, as_tuple=True)


def _bev_overlap(a: torch.Tensor, b: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    return convex_intersection_area(bev_corners(a[ia]), bev_corners(b[ib]))


def _iou(boxes_a: Any, boxes_b: Any, mode: str, aligned: bool) -> Any:
    a, was_np = _as_tensor(boxes_a)
    b, _ = _as_tensor(boxes_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] < 7 or b.shape[1] < 7:
        raise ValueError(f"boxes must be (N, 7) and (M, 7), got {tuple(a.shape)} and {tuple(b.shape)}")
    if aligned:
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"aligned IoU needs as many boxes in both sets, got {a.shape[0]} and {b.shape[0]}")
        ia = ib = torch.arange(a.shape[0], device=a.device)
    else:
        ia, ib = _pair_indices(a, b)
    inter = _bev_overlap(a, b, ia, ib)
    area_a = a[ia, 3] * a[ia, 4]
    area_b = b[ib, 3] * b[ib, 4]
    if mode == "3d":
        top = torch.minimum(a[ia, 2] + a[ia, 5] / 2, b[ib, 2] + b[ib, 5] / 2)
        bottom = torch.maximum(a[ia, 2] - a[ia, 5] / 2, b[ib, 2] - b[ib, 5] / 2)
        inter = inter * (top - bottom).clamp(min=0)
        area_a = area_a * a[ia, 5]
        area_b = area_b * b[ib, 5]
    iou = inter / (area_a + area_b - inter).clamp(min=_EPS)
    if aligned:
        out = iou
    else:
        out = a.new_zeros((a.shape[0], b.shape[0]))
        out[ia, ib] = iou
    return out.numpy() if was_np else out


def bev_iou(boxes_a: Any, boxes_b: Any, aligned: bool = False) -> Any:
    """Rotated bird's-eye-view IoU of LiDAR boxes (N, 7) and (M, 7): (N, M), or (N,) when `aligned`."""
    return _iou(boxes_a, boxes_b, "bev", aligned)


def iou_3d(boxes_a: Any, boxes_b: Any, aligned: bool = False) -> Any:
    """3D IoU of yaw-rotated LiDAR boxes (N, 7) and (M, 7): (N, M), or (N,) when `aligned`."""
    return _iou(boxes_a, boxes_b, "3d", aligned)


def nearest_bev_iou(boxes_a: Any, boxes_b: Any) -> Any:
    """OpenPCDet's anchor-assignment IoU: each LiDAR box (N, 7) / (M, 7) is turned to its nearest axis (dx and dy
    swapped when its yaw is within pi/4 of +-pi/2), then axis-aligned BEV IoU -> (N, M)
    [OpenPCDet: pcdet/utils/box_utils.py boxes3d_nearest_bev_iou]."""
    a, was_np = _as_tensor(boxes_a)
    b, _ = _as_tensor(boxes_b)

    def aligned(x: torch.Tensor) -> torch.Tensor:
        yaw = x[:, 6] - torch.floor(x[:, 6] / np.pi + 0.5) * np.pi  # in [-pi/2, pi/2)
        dims = torch.where((yaw.abs() < np.pi / 4)[:, None], x[:, [3, 4]], x[:, [4, 3]])
        return torch.cat([x[:, :2] - dims / 2, x[:, :2] + dims / 2], 1)

    ea, eb = aligned(a), aligned(b)
    lo = torch.maximum(ea[:, None, :2], eb[None, :, :2])
    hi = torch.minimum(ea[:, None, 2:], eb[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    area_a = (ea[:, 2:] - ea[:, :2]).prod(-1)
    area_b = (eb[:, 2:] - eb[:, :2]).prod(-1)
    iou = inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)
    return iou.numpy() if was_np else iou


def box_iou_2d(a: np.ndarray, b: np.ndarray, aligned: bool = False) -> np.ndarray:
    """IoU of axis-aligned boxes (x1, y1, x2, y2): (N, 4) x (M, 4) -> (N, M), or (N,) when `aligned`."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if not aligned:
        a, b = a[:, None, :], b[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
