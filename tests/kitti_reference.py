"""An independent, deliberately plain implementation of the KITTI object evaluation protocol, used only to
check `xmkd.eval.kitti` on random data: Python loops, shapely for rotated overlaps, no shared code."""

from __future__ import annotations

import math

import numpy as np
from shapely.geometry import Polygon

MIN_H, MAX_OCC, MAX_TRUNC = (40, 25, 25), (0, 1, 2), (0.15, 0.3, 0.5)


def footprint(obj):
    h, w, l = obj["dims"]
    x, _, z = obj["loc"]
    c, s = math.cos(obj["ry"]), math.sin(obj["ry"])
    pts = []
    for dx, dz in ((l / 2, w / 2), (l / 2, -w / 2), (-l / 2, -w / 2), (-l / 2, w / 2)):
        # rotation about the camera's y axis: x' = x cos + z sin, z' = -x sin + z cos
        pts.append((x + dx * c + dz * s, z - dx * s + dz * c))
    return Polygon(pts)


def overlap(d, g, metric):
    if metric == "bbox":
        a, b = d["bbox"], g["bbox"]
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0
    pa, pb = footprint(d), footprint(g)
    inter = pa.intersection(pb).area
    va, vb = pa.area, pb.area
    if metric == "3d":
        ya, yb = d["loc"][1], g["loc"][1]
        oh = max(0.0, min(ya, yb) - max(ya - d["dims"][0], yb - g["dims"][0]))
        inter, va, vb = inter * oh, va * d["dims"][0], vb * g["dims"][0]
    return inter / (va + vb - inter) if va + vb - inter > 0 else 0.0


def dontcare_overlap(d, box):
    a = d["bbox"]
    iw = max(0.0, min(a[2], box[2]) - max(a[0], box[0]))
    ih = max(0.0, min(a[3], box[3]) - max(a[1], box[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return iw * ih / area if area > 0 else 0.0


def frame_flags(gts, dts, cls, diff):
    neighbour = {"car": "van", "pedestrian": "person_sitting"}.get(cls)
    ig_gt, n_valid = [], 0
    for g in gts:
        name = g["name"].lower()
        valid = 1 if name == cls else 0 if name == neighbour else -1
        hard = g["occ"] > MAX_OCC[diff] or g["trunc"] > MAX_TRUNC[diff] or g["bbox"][3] - g["bbox"][1] <= MIN_H[diff]
        if valid == 1 and not hard:
            ig_gt.append(0)
            n_valid += 1
        elif valid == 0 or (hard and valid == 1):
            ig_gt.append(1)
        else:
            ig_gt.append(-1)
    ig_dt = []
    for d in dts:
        if abs(d["bbox"][3] - d["bbox"][1]) < MIN_H[diff]:
            ig_dt.append(1)
        else:
            ig_dt.append(0 if d["name"].lower() == cls else -1)
    dcs = [g["bbox"] for g in gts if g["name"] == "DontCare"]
    return ig_gt, ig_dt, dcs, n_valid


def match(gts, dts, ig_gt, ig_dt, dcs, metric, min_ov, thresh, fp_mode):
    assigned = [False] * len(dts)
    below = [fp_mode and d["score"] < thresh for d in dts]
    tp = fp = fn = 0
    scores, deltas = [], []
    for i, g in enumerate(gts):
        if ig_gt[i] == -1:
            continue
        best, value, best_ov, took_ignored = -1, None, 0.0, False
        for j, d in enumerate(dts):
            if ig_dt[j] == -1 or assigned[j] or below[j]:
                continue
            o = overlap(d, g, metric)
            if o <= min_ov:
                continue
            if not fp_mode:
                if value is None or d["score"] > value:
                    best, value = j, d["score"]
            elif (o > best_ov or took_ignored) and ig_dt[j] == 0:
                best, value, best_ov, took_ignored = j, 1.0, o, False
            elif value is None and ig_dt[j] == 1:
                best, value, took_ignored = j, 1.0, True
        if value is None:
            fn += ig_gt[i] == 0
        elif ig_gt[i] == 1 or ig_dt[best] == 1:
            assigned[best] = True
        else:
            tp += 1
            scores.append(dts[best]["score"])
            deltas.append(g["alpha"] - dts[best]["alpha"])
            assigned[best] = True
    sim = None
    if fp_mode:
        fp = sum(1 for j in range(len(dts)) if not (assigned[j] or ig_dt[j] != 0 or below[j]))
        if metric == "bbox":
            for box in dcs:
                for j, d in enumerate(dts):
                    if assigned[j] or ig_dt[j] != 0 or below[j]:
                        continue
                    if dontcare_overlap(d, box) > min_ov:
                        assigned[j] = True
                        fp -= 1
        sim = sum((1 + math.cos(x)) / 2 for x in deltas) if (tp or fp) else None
    return tp, fp, fn, sim, scores


def average_precisions(frames, cls, metric, diff, min_ov):
    """(AP_R11, AP_R40, AOS_R11, AOS_R40) in percent."""
    flags = [frame_flags(g, d, cls, diff) for g, d in frames]
    n_valid = sum(f[3] for f in flags)
    if n_valid == 0:
        return 0.0, 0.0, 0.0, 0.0
    scores = []
    for (g, d), (ig, idt, dc, _) in zip(frames, flags):
        scores += match(g, d, ig, idt, dc, metric, min_ov, 0.0, False)[4]
    scores.sort(reverse=True)
    thresholds, current = [], 0.0
    for i, s in enumerate(scores):
        left = (i + 1) / n_valid
        right = (i + 2) / n_valid if i < len(scores) - 1 else left
        if right - current < current - left and i < len(scores) - 1:
            continue
        thresholds.append(s)
        current += 1 / 40
    prec, aos = np.zeros(41), np.zeros(41)
    for t, th in enumerate(thresholds):
        tp = fp = 0
        sim = 0.0
        for (g, d), (ig, idt, dc, _) in zip(frames, flags):
            a, b, _, s, _ = match(g, d, ig, idt, dc, metric, min_ov, th, True)
            tp, fp = tp + a, fp + b
            sim += s or 0.0
        prec[t] = tp / (tp + fp) if tp + fp else 0.0
        aos[t] = sim / (tp + fp) if tp + fp else 0.0
    for t in range(len(thresholds)):
        prec[t], aos[t] = prec[t:].max(), aos[t:].max()
    return (prec[0::4].sum() / 11 * 100, prec[1:].sum() / 40 * 100, aos[0::4].sum() / 11 * 100,
            aos[1:].sum() / 40 * 100)
