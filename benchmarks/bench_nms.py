"""Rotated BEV NMS on CPU: the lazy greedy pass (`xmkd.models.det.nms.rotated_nms`) against the full-matrix pass it
replaced (every pre-NMS candidate against every other, then the greedy loop), on candidate sets shaped like a
detector's output at validation: an untrained / weak student (thousands of overlapping car-sized boxes above the
0.1 score threshold) and a trained one (a few boxes per object). The release's settings: IoU 0.01, 4,096
candidates, 500 kept (OpenPCDet's kitti configs).

    python -m benchmarks nms
"""

from __future__ import annotations

import time

import torch

from xmkd.geometry.iou import bev_iou
from xmkd.models.det.nms import rotated_nms


def full_matrix_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, pre_max: int = 4096,
                    post_max: int = 500) -> torch.Tensor:
    """The pass before the lazy one: the (K, K) overlap matrix of the K best candidates, then the greedy loop."""
    order = torch.argsort(scores, descending=True)[:pre_max]
    over = bev_iou(boxes[order], boxes[order]) > threshold
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) >= post_max:
            break
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def candidates(kind: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 7) LiDAR boxes and scores. 'weak': car-sized boxes spread over the benchmark's 32 x 32 m range;
    'trained': 20 objects, each with n / 20 jittered copies."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([3.9, 1.6, 1.5]) * (0.8 + 0.4 * torch.rand(n, 3, generator=g))
    yaw = torch.rand(n, 1, generator=g) * 6.28
    if kind == "weak":
        xy = torch.rand(n, 2, generator=g) * 32
    else:
        objects = torch.rand(20, 2, generator=g) * 32
        xy = objects[torch.arange(n) % 20] + 0.3 * torch.randn(n, 2, generator=g)
    return torch.cat([xy, torch.zeros(n, 1), size, yaw], 1), torch.rand(n, generator=g)


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    torch.set_num_threads(1)
    print("| candidates | kind | kept | full matrix (s) | lazy (s) | speed-up | same boxes |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for kind, n in (("weak", 1000), ("weak", 4096), ("trained", 1000), ("trained", 4096)):
        boxes, scores = candidates(kind, n)
        t_full, ref = timed(full_matrix_nms, boxes, scores, 0.01)
        t_lazy, out = timed(rotated_nms, boxes, scores, 0.01)
        print(f"| {n} | {kind} | {len(out)} | {t_full:.2f} | {t_lazy:.3f} | {t_full / t_lazy:.0f}x | "
              f"{'yes' if torch.equal(ref, out) else 'NO'} |")


if __name__ == "__main__":
    main()
