"""KITTI 3D object evaluation, exactly the official protocol, on CPU and fast.

AP with 11 and 40 recall points for 2D boxes (bbox), bird's-eye view (bev), 3D and orientation (aos); Car,
Pedestrian, Cyclist; easy / moderate / hard (minimum box height 40 / 25 / 25 px, maximum occlusion 0 / 1 / 2,
maximum truncation 0.15 / 0.3 / 0.5); strict overlaps (0.7, 0.5, 0.5 for every metric) and loose ones (Car
0.7 / 0.5 / 0.5 for bbox / bev / 3d, Pedestrian and Cyclist 0.5 / 0.25 / 0.25). As the official code
(devkit `evaluate_object.cpp`, its Python port in OpenPCDet / second.pytorch): neighbouring classes are
ignored (Van for Car, Person_sitting for Pedestrian), detections inside DontCare regions are not false
positives (2D metric), ground-truth boxes too small, occluded or truncated for a difficulty are ignored, and
precision is sampled at up to 41 score thresholds chosen from the true positives' scores.

Inputs are checked as the official tools require: every frame of the list needs a prediction file (the devkit's
`evaluate_object.cpp` stops at the first missing one; an empty file means no detections), and every number must
be finite. Results carry what bounds or explains them: each class / difficulty's count of valid ground-truth
boxes and the AP ceiling that count allows (`ap_ceiling`: with fewer than 41 boxes the 41-point sampling caps
even perfect detections below 100), and warnings (e.g. detections whose 2D box is a -1 placeholder, which the
protocol ignores in every metric, BEV and 3D included, since it filters detections by 2D box height).

Speed: rotated BEV / 3D overlaps are computed for every frame at once with the vectorised exact polygon
intersection of `xmkd.geometry.iou`, and the matching runs in numba-compiled loops over all frames and
thresholds (compiled once, cached on disk).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numba
import numpy as np
import torch

from xmkd.data.readers.base import read_text
from xmkd.data.readers.kitti_files import object_line_values
from xmkd.errors import XmkdDataError
from xmkd.geometry.iou import convex_intersection_area
from xmkd.io import atomic_write_text

CLASSES = ("Car", "Pedestrian", "Cyclist")
NAMES = {"car": 0, "pedestrian": 1, "cyclist": 2, "van": 3, "person_sitting": 4, "truck": 5, "tram": 6, "misc": 7,
         "dontcare": 8}
NEIGHBOUR = {0: 3, 1: 4, 2: -1}  # class -> the class whose boxes are ignored, not counted as misses
DONTCARE = 8
MIN_HEIGHT = (40.0, 25.0, 25.0)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
DIFFICULTIES = ("easy", "moderate", "hard")
METRICS = ("bbox", "bev", "3d")
# min overlap [setting][metric][class]
MIN_OVERLAP = {"strict": ((0.7, 0.5, 0.5), (0.7, 0.5, 0.5), (0.7, 0.5, 0.5)),
               "loose": ((0.7, 0.5, 0.5), (0.5, 0.25, 0.25), (0.5, 0.25, 0.25))}
N_SAMPLE = 41


@dataclass
class Annotations:
    """All frames' objects, concatenated; frame f owns rows offsets[f]:offsets[f + 1]."""

    offsets: np.ndarray
    name: np.ndarray  # int codes (NAMES; 9 = other)
    truncation: np.ndarray
    occlusion: np.ndarray
    alpha: np.ndarray
    bbox: np.ndarray  # (N, 4)
    dims: np.ndarray  # (N, 3) h, w, l
    loc: np.ndarray  # (N, 3) x, y, z (camera, bottom centre)
    ry: np.ndarray
    score: np.ndarray


def read_annotations(folder: str | Path, ids: list[str], is_prediction: bool,
                     unknown: dict[str, list[str]] | None = None) -> Annotations:
    """Parse `<folder>/<id>.txt` for every id (here a missing prediction file means no detections: callers that
    follow the devkit check coverage first, see `kitti_report`).

    Raises XmkdDataError naming the file (and line and field) for a missing ground-truth file, a folder or a Git
    LFS pointer in place of a file, bytes that are not UTF-8 text, a wrong column count, a value that is not a
    plainly spelled number (`object_line_values`), or one that is not finite (nan / inf: it would silently change
    the AP). Class names that KITTI does not know (`NAMES`, any case) are kept as "other", which no metric scores;
    `unknown`, when given, collects them per file (path -> names, in file order).
    """
    rows, counts = [], []
    folder = Path(folder)
    what = "prediction" if is_prediction else "ground-truth label"
    for fid in ids:
        path = folder / f"{fid}.txt"
        if not path.exists():
            if is_prediction:
                counts.append(0)
                continue
            raise XmkdDataError("ground-truth label file is missing", source=str(path))
        n = 0
        for lineno, line in enumerate(read_text(path, what).splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (15, 16) or (is_prediction and len(parts) != 16):
                want = "16 (with a score)" if is_prediction else "15"
                raise XmkdDataError(f"line {lineno}: expected {want} columns, got {len(parts)}", source=str(path))
            values = object_line_values(parts, lineno, str(path))
            if unknown is not None and parts[0].lower() not in NAMES:
                unknown.setdefault(str(path), []).append(parts[0])
            rows.append((NAMES.get(parts[0].lower(), 9), *values, *([0.0] if len(parts) == 15 else [])))
            n += 1
        counts.append(n)
    a = np.array(rows, dtype=np.float64).reshape(-1, 16)
    return Annotations(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), a[:, 0].astype(np.int64),
                       a[:, 1], a[:, 2].astype(np.int64), a[:, 3], np.ascontiguousarray(a[:, 4:8]),
                       np.ascontiguousarray(a[:, 8:11]), np.ascontiguousarray(a[:, 11:14]), a[:, 14], a[:, 15])


def _pairs(dt: Annotations, gt: Annotations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (detection, ground truth) pair within a frame: global indices and the per-frame pair offsets."""
    nd, ng = np.diff(dt.offsets), np.diff(gt.offsets)
    sizes = nd * ng
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    frame = np.repeat(np.arange(len(nd)), sizes)
    local = np.arange(offsets[-1]) - offsets[frame]
    ngf = ng[frame]
    di = dt.offsets[frame] + local // np.maximum(ngf, 1)
    gi = gt.offsets[frame] + local % np.maximum(ngf, 1)
    return di, gi, offsets


def _iou_2d(a: np.ndarray, b: np.ndarray, criterion: int = -1) -> np.ndarray:
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    union = area_a if criterion == 0 else area_a + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _bev_corners(loc: np.ndarray, dims: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Footprints in the camera's (x, z) plane, counter-clockwise: (N, 4, 2)."""
    l, w = dims[:, 2], dims[:, 1]
    c, s = np.cos(-ry), np.sin(-ry)  # heading (cos ry, -sin ry) in (x, z)
    signs = np.array([[1, -1], [1, 1], [-1, 1], [-1, -1]], dtype=np.float64) * 0.5
    lx = signs[None, :, 0] * l[:, None]
    lz = signs[None, :, 1] * w[:, None]
    return np.stack([loc[:, 0:1] + lx * c[:, None] - lz * s[:, None], loc[:, 2:3] + lx * s[:, None] + lz * c[:, None]],
                    -1)


def _rotated_overlaps(dt: Annotations, gt: Annotations, di: np.ndarray, gi: np.ndarray, three_d: bool) -> np.ndarray:
    out = np.zeros(len(di))
    # only pairs whose circumscribed circles meet can overlap
    rd = 0.5 * np.hypot(dt.dims[di, 2], dt.dims[di, 1])
    rg = 0.5 * np.hypot(gt.dims[gi, 2], gt.dims[gi, 1])
    near = np.hypot(dt.loc[di, 0] - gt.loc[gi, 0], dt.loc[di, 2] - gt.loc[gi, 2]) <= rd + rg
    idx = np.nonzero(near)[0]
    if len(idx) == 0:
        return out
    a = torch.from_numpy(_bev_corners(dt.loc[di[idx]], dt.dims[di[idx]], dt.ry[di[idx]]))
    b = torch.from_numpy(_bev_corners(gt.loc[gi[idx]], gt.dims[gi[idx]], gt.ry[gi[idx]]))
    inter = convex_intersection_area(a, b).numpy()
    area_d = dt.dims[di[idx], 2] * dt.dims[di[idx], 1]
    area_g = gt.dims[gi[idx], 2] * gt.dims[gi[idx], 1]
    if three_d:  # y points down and locations are bottom centres: a box spans [y - h, y]
        yd, yg = dt.loc[di[idx], 1], gt.loc[gi[idx], 1]
        hd, hg = dt.dims[di[idx], 0], gt.dims[gi[idx], 0]
        overlap_h = np.clip(np.minimum(yd, yg) - np.maximum(yd - hd, yg - hg), 0, None)
        inter = inter * overlap_h
        area_d, area_g = area_d * hd, area_g * hg
    union = area_d + area_g - inter
    out[idx] = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


# -- numba kernels ----------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _clean(gt_name, gt_h, gt_occ, gt_trunc, dt_name, dt_h, cls, neighbour, max_occ, max_trunc, min_h):
    ng, nd = len(gt_name), len(dt_name)
    ignored_gt = np.empty(ng, np.int64)
    n_valid = 0
    for i in range(ng):
        valid = 1 if gt_name[i] == cls else (0 if gt_name[i] == neighbour else -1)
        ignore = gt_occ[i] > max_occ or gt_trunc[i] > max_trunc or gt_h[i] <= min_h
        if valid == 1 and not ignore:
            ignored_gt[i] = 0
            n_valid += 1
        elif valid == 0 or (ignore and valid == 1):
            ignored_gt[i] = 1
        else:
            ignored_gt[i] = -1
    ignored_dt = np.empty(nd, np.int64)
    for j in range(nd):
        if dt_h[j] < min_h:
            ignored_dt[j] = 1
        elif dt_name[j] == cls:
            ignored_dt[j] = 0
        else:
            ignored_dt[j] = -1
    return ignored_gt, ignored_dt, n_valid


@numba.njit(cache=True)
def _statistics(ov, ng, nd, dt_score, gt_alpha, dt_alpha, ignored_gt, ignored_dt, dc_ov, gt_is_dc, use_dc,
                min_overlap, thresh, compute_fp, compute_aos, tp_scores):
    """One frame at one score threshold: (tp, fp, fn, similarity, number of tp scores written)."""
    assigned = np.zeros(nd, np.bool_)
    below = np.zeros(nd, np.bool_)
    if compute_fp:
        for j in range(nd):
            below[j] = dt_score[j] < thresh
    tp = fp = fn = 0
    n_tp = 0
    delta = np.empty(ng)
    n_delta = 0
    no_detection = -10000000.0
    for i in range(ng):
        if ignored_gt[i] == -1:
            continue
        det_idx = -1
        valid_detection = no_detection
        max_overlap = 0.0
        assigned_ignored = False
        for j in range(nd):
            if ignored_dt[j] == -1 or assigned[j] or below[j]:
                continue
            o = ov[j * ng + i]
            if not compute_fp and o > min_overlap and dt_score[j] > valid_detection:
                det_idx = j
                valid_detection = dt_score[j]
            elif compute_fp and o > min_overlap and (o > max_overlap or assigned_ignored) and ignored_dt[j] == 0:
                max_overlap = o
                det_idx = j
                valid_detection = 1.0
                assigned_ignored = False
            elif compute_fp and o > min_overlap and valid_detection == no_detection and ignored_dt[j] == 1:
                det_idx = j
                valid_detection = 1.0
                assigned_ignored = True
        if valid_detection == no_detection and ignored_gt[i] == 0:
            fn += 1
        elif valid_detection != no_detection and (ignored_gt[i] == 1 or ignored_dt[det_idx] == 1):
            assigned[det_idx] = True
        elif valid_detection != no_detection:
            tp += 1
            tp_scores[n_tp] = dt_score[det_idx]
            n_tp += 1
            if compute_aos:
                delta[n_delta] = gt_alpha[i] - dt_alpha[det_idx]
                n_delta += 1
            assigned[det_idx] = True
    similarity = 0.0
    if compute_fp:
        for j in range(nd):
            if not (assigned[j] or ignored_dt[j] == -1 or ignored_dt[j] == 1 or below[j]):
                fp += 1
        n_stuff = 0
        if use_dc:  # detections inside DontCare regions are not false positives (2D metric only)
            for k in range(ng):
                if not gt_is_dc[k]:
                    continue
                for j in range(nd):
                    if assigned[j] or ignored_dt[j] == -1 or ignored_dt[j] == 1 or below[j]:
                        continue
                    if dc_ov[j * ng + k] > min_overlap:
                        assigned[j] = True
                        n_stuff += 1
        fp -= n_stuff
        if compute_aos:
            if tp > 0 or fp > 0:
                for d in range(n_delta):
                    similarity += (1.0 + np.cos(delta[d])) / 2.0
            else:
                similarity = -1.0
    return tp, fp, fn, similarity, n_tp


@numba.njit(cache=True)
def _eval_frames(gt_off, dt_off, pair_off, ov, dc_ov, gt_name, gt_h, gt_occ, gt_trunc, gt_alpha, dt_name, dt_h,
                 dt_score, dt_alpha, cls, neighbour, max_occ, max_trunc, min_h, min_overlap, compute_aos, use_dc,
                 thresholds, first_pass):
    """First pass: the true positives' scores at threshold 0 and the number of valid ground-truth boxes.
    Second pass: (tp, fp, fn, similarity) summed over frames for every threshold."""
    n_frames = len(gt_off) - 1
    tp_all = np.empty(len(dt_name))
    n_tp_all = 0
    n_valid_all = 0
    pr = np.zeros((len(thresholds), 4))
    scratch = np.empty(max(1, len(dt_name)))
    for f in range(n_frames):
        g0, g1, d0, d1, p0 = gt_off[f], gt_off[f + 1], dt_off[f], dt_off[f + 1], pair_off[f]
        ng, nd = g1 - g0, d1 - d0
        ignored_gt, ignored_dt, n_valid = _clean(gt_name[g0:g1], gt_h[g0:g1], gt_occ[g0:g1], gt_trunc[g0:g1],
                                                 dt_name[d0:d1], dt_h[d0:d1], cls, neighbour, max_occ, max_trunc,
                                                 min_h)
        n_valid_all += n_valid
        ov_f = ov[p0:p0 + nd * ng]
        dc_f = dc_ov[p0:p0 + nd * ng]
        is_dc = gt_name[g0:g1] == 8
        if first_pass:
            tp, fp, fn, sim, n_tp = _statistics(ov_f, ng, nd, dt_score[d0:d1], gt_alpha[g0:g1], dt_alpha[d0:d1],
                                                ignored_gt, ignored_dt, dc_f, is_dc, use_dc, min_overlap, 0.0,
                                                False, False, scratch)
            tp_all[n_tp_all:n_tp_all + n_tp] = scratch[:n_tp]
            n_tp_all += n_tp
        else:
            for t in range(len(thresholds)):
                tp, fp, fn, sim, n_tp = _statistics(ov_f, ng, nd, dt_score[d0:d1], gt_alpha[g0:g1],
                                                    dt_alpha[d0:d1], ignored_gt, ignored_dt, dc_f, is_dc, use_dc,
                                                    min_overlap, thresholds[t], True, compute_aos, scratch)
                pr[t, 0] += tp
                pr[t, 1] += fp
                pr[t, 2] += fn
                if sim != -1.0:  # frames with neither tp nor fp do not count for aos
                    pr[t, 3] += sim
    return tp_all[:n_tp_all], n_valid_all, pr


def score_thresholds(scores: np.ndarray, num_gt: int, num_sample_pts: int = N_SAMPLE) -> np.ndarray:
    """The official choice of up to 41 thresholds, evenly spaced in recall, from the true positives' scores."""
    scores = np.sort(scores)[::-1]
    current_recall = 0.0
    out = []
    for i, score in enumerate(scores):
        l_recall = (i + 1) / num_gt
        r_recall = (i + 2) / num_gt if i < len(scores) - 1 else l_recall
        if (r_recall - current_recall) < (current_recall - l_recall) and i < len(scores) - 1:
            continue
        out.append(score)
        current_recall += 1 / (num_sample_pts - 1.0)
    return np.asarray(out, dtype=np.float64)


def average_precision(precision: np.ndarray, recall_points: int) -> float:
    """R11: mean of precision at recall 0, 0.1, ..., 1 (every 4th of 41 samples); R40: the 40 samples after 0."""
    if recall_points == 11:
        return float(precision[0::4].sum() / 11 * 100)
    return float(precision[1:].sum() / 40 * 100)


@lru_cache(maxsize=1024)
def ap_ceiling(num_valid_gt: int, recall_points: int) -> float:
    """The highest AP (percent) the official sampling allows with `num_valid_gt` valid ground-truth boxes: that of
    a perfect detector (every box found with its own score, no false positive), derived by running the protocol's
    own threshold choice (`score_thresholds`) on its scores. Precision is 1 at each chosen threshold and 0 at the
    remaining of the 41 samples, so with n < 41 boxes R40 gives (n - 1) / 40 and R11 ceil(n / 4) / 11 (one box:
    R40 0, R11 9.09); from 41 boxes on both are 100. No detector scores above it: every threshold is a true
    positive's score, and there are at most n of those."""
    if num_valid_gt <= 0:
        return 0.0
    scores = np.linspace(1.0, 0.5, num_valid_gt)
    precision = np.zeros(N_SAMPLE)
    precision[:len(score_thresholds(scores, num_valid_gt))] = 1.0
    return average_precision(precision, recall_points)


@dataclass
class KittiReport:
    """AP of a set of predictions, with what bounds or explains the numbers."""

    ap: dict[str, float]  # "Car/3d/R40/strict/moderate" -> AP in percent (metrics bbox, bev, 3d, aos)
    valid_gt: dict[str, int]  # "Car/moderate" -> valid ground-truth boxes of that class and difficulty
    warnings: list[str] = field(default_factory=list)

    def ceiling(self, cls: str, recall_points: int, difficulty: str) -> float:
        """`ap_ceiling` of a class and difficulty (the same for every metric and overlap setting)."""
        return ap_ceiling(self.valid_gt[f"{cls}/{difficulty}"], recall_points)

    def to_json(self) -> dict:
        """The AP keys at the top level (as before), plus `valid_gt`, `ceiling` ("Car/R40/moderate" -> percent,
        for every class and difficulty) and `warnings`."""
        ceilings = {f"{c}/R{rp}/{d}": self.ceiling(c, rp, d) for c in CLASSES for rp in (11, 40) for d in DIFFICULTIES}
        return {**self.ap, "valid_gt": dict(self.valid_gt), "ceiling": ceilings, "warnings": list(self.warnings)}


@dataclass
class KittiOverlaps:
    pair_off: np.ndarray
    by_metric: dict[str, np.ndarray]
    dontcare: np.ndarray


def compute_overlaps(dt: Annotations, gt: Annotations) -> KittiOverlaps:
    di, gi, off = _pairs(dt, gt)
    return KittiOverlaps(off, {"bbox": _iou_2d(dt.bbox[di], gt.bbox[gi]),
                               "bev": _rotated_overlaps(dt, gt, di, gi, False),
                               "3d": _rotated_overlaps(dt, gt, di, gi, True)},
                         _iou_2d(dt.bbox[di], gt.bbox[gi], criterion=0))


def evaluate(gt: Annotations, dt: Annotations) -> KittiReport:
    """AP in percent for every class / metric (+ aos) / R11, R40 / strict, loose / difficulty, and the number of
    valid ground-truth boxes of every class / difficulty."""
    ov = compute_overlaps(dt, gt)
    gt_h = gt.bbox[:, 3] - gt.bbox[:, 1]
    dt_h = np.abs(dt.bbox[:, 3] - dt.bbox[:, 1])
    results: dict[str, float] = {}
    valid_gt: dict[str, int] = {}
    for setting, table in MIN_OVERLAP.items():
        for m, metric in enumerate(METRICS):
            aos = metric == "bbox"
            for c, cls in enumerate(CLASSES):
                min_overlap = table[m][c]
                for d, diff in enumerate(DIFFICULTIES):
                    args = (gt.offsets, dt.offsets, ov.pair_off, ov.by_metric[metric], ov.dontcare, gt.name, gt_h,
                            gt.occlusion, gt.truncation, gt.alpha, dt.name, dt_h, dt.score, dt.alpha, c,
                            NEIGHBOUR[c], MAX_OCCLUSION[d], MAX_TRUNCATION[d], MIN_HEIGHT[d], min_overlap, aos,
                            metric == "bbox")
                    scores, n_valid, _ = _eval_frames(*args, np.zeros(0), True)
                    valid_gt[f"{cls}/{diff}"] = int(n_valid)
                    precision = np.zeros(N_SAMPLE)
                    orientation = np.zeros(N_SAMPLE)
                    if n_valid > 0:
                        thresholds = score_thresholds(scores, n_valid)
                        _, _, pr = _eval_frames(*args, thresholds, False)
                        with np.errstate(divide="ignore", invalid="ignore"):
                            prec = pr[:, 0] / (pr[:, 0] + pr[:, 1])
                            aos_v = pr[:, 3] / (pr[:, 0] + pr[:, 1])
                        prec = np.nan_to_num(prec)
                        aos_v = np.nan_to_num(aos_v)
                        for i in range(len(thresholds)):  # interpolate: best precision at this recall or higher
                            precision[i] = prec[i:].max()
                            orientation[i] = aos_v[i:].max()
                    for rp in (11, 40):
                        results[f"{cls}/{metric}/R{rp}/{setting}/{diff}"] = average_precision(precision, rp)
                        if aos:
                            results[f"{cls}/aos/R{rp}/{setting}/{diff}"] = average_precision(orientation, rp)
    return KittiReport(results, valid_gt)


def frame_ids(gt_dir: str | Path, split: str | Path | None) -> list[str]:
    """The split file's ids, else the stem of every `*.txt` file in the ground-truth folder. A split file that lists
    no id, or a ground-truth folder without label files, is an error (there would be nothing to evaluate)."""
    if split:
        ids = read_text(Path(split), "split list").split()
        if not ids:
            raise XmkdDataError("lists no frame ids; expected one frame id (e.g. 000123) per line", source=str(split))
        return ids
    if not Path(gt_dir).is_dir():
        raise XmkdDataError("ground-truth folder not found", source=str(gt_dir))
    ids = sorted(p.stem for p in Path(gt_dir).glob("*.txt") if p.is_file())
    if not ids:
        raise XmkdDataError("no label files (*.txt)", source=str(gt_dir))
    return ids


def require_prediction_folder(pred_dir: Path, prefix: str = "") -> None:
    """A folder of KITTI prediction files `<frame id>.txt` (`--pred` of `xmkd eval-kitti` and `xmkd viz`): a file or
    a missing path is an XmkdDataError naming it, its message starting with `prefix`."""
    if pred_dir.is_file():
        raise XmkdDataError(f"{prefix}is a file; --pred takes the folder that holds one <frame id>.txt per frame, "
                            f"e.g. {pred_dir.parent}", source=str(pred_dir))
    if not pred_dir.is_dir():
        raise XmkdDataError(f"{prefix}prediction folder not found (a folder of KITTI prediction files <frame id>.txt)",
                            source=str(pred_dir))


def _coverage_warnings(pred_dir: Path, ids: list[str], allow_missing: bool) -> list[str]:
    """Check that the prediction folder covers the frames, as the devkit does (it stops at the first frame without
    a file). With `allow_missing` a partly covered folder is a warning (those frames count as frames without
    detections), but a folder that covers no frame is always an error."""
    require_prediction_folder(pred_dir)
    folders = [pred_dir / f"{i}.txt" for i in ids if (pred_dir / f"{i}.txt").is_dir()]
    if folders:
        raise XmkdDataError(f"is a folder; expected a prediction file ({len(folders)} such folder(s) among the "
                            "frames' file names)", source=str(folders[0]))
    stems = {p.stem for p in pred_dir.glob("*.txt") if p.is_file()}
    missing = [i for i in ids if i not in stems]
    if not missing:
        return []
    n, total = len(missing), len(ids)
    examples = ", ".join(f"{i}.txt" for i in missing[:3]) + (", ..." if n > 3 else "")
    hints = []
    numeric = {int(s): s for s in stems if s.isdigit()}
    renamed = [(i, numeric[int(i)]) for i in missing if i.isdigit() and int(i) in numeric]
    if renamed:
        i, s = renamed[0]
        verb = "is" if len(renamed) == 1 else "are"
        hints.append(f"{len(renamed)} {verb} there under another spelling of the number (e.g. {s}.txt for frame {i}):"
                     f" name each file by the frame id, {i}.txt")
    sub = pred_dir / "data"
    if sub.is_dir() and any(sub.glob("*.txt")):
        hints.append(f"the files seem to be in {sub} (the devkit's results/data layout): pass --pred {sub}")
    if not stems:
        hints.append("the folder holds no *.txt files")
    elif not hints and len(stems & set(ids)) == 0:
        hints.append(f"its {len(stems)} *.txt files (e.g. {sorted(stems)[0]}.txt) match no frame id of the "
                     "ground truth / split")
    hint = (" (" + "; ".join(hints) + ")") if hints else ""
    what = f"no prediction file for {n} of the {total} frames: {examples}{hint}"
    if not allow_missing or n == total:
        rule = ("every frame needs one (empty when nothing is detected), as the official devkit requires" if n < total
                else "nothing to evaluate")
        raise XmkdDataError(f"{what}; {rule}", source=str(pred_dir))
    return [f"{pred_dir}: {what}; counted as frames without detections (--allow-missing), so their ground truth "
            "counts as missed"]


def _box_warnings(dt: Annotations, pred_dir: Path) -> list[str]:
    """Predictions whose 2D box is a placeholder: the protocol drops a detection by its 2D box height (under 25 px
    for every difficulty), in the BEV and 3D metrics too."""
    n = len(dt.name)
    if n == 0:
        return [f"{pred_dir}: the prediction files hold no detections at all"]
    h = np.abs(dt.bbox[:, 3] - dt.bbox[:, 1])
    placeholder = int(np.all(dt.bbox == -1, axis=1).sum())
    why = ("the official protocol ignores detections less than 25 px tall in the image in every metric, BEV and 3D "
           "included: write each 3D box's projection into the image as its 2D box")
    if np.all(h < MIN_HEIGHT[-1]):
        kind = "a -1 2D box" if placeholder == n else "a 2D box under 25 px tall"
        return [f"{pred_dir}: every one of the {n} predictions has {kind}, so every AP is 0: {why}"]
    if placeholder:
        return [f"{pred_dir}: {placeholder} of the {n} predictions have a -1 2D box and are ignored: {why}"]
    return []


def kitti_report(gt_dir: str | Path, pred_dir: str | Path, split: str | Path | None = None,
                 allow_missing: bool = False) -> KittiReport:
    """Evaluate a folder of KITTI prediction files against a folder of ground-truth label files.

    Frames: the ids in `split` (one per line), else every ground-truth file. Raises XmkdDataError when the
    prediction folder is missing or lacks a file for some frame (`allow_missing`: only for none of them; the others
    count as frames without detections, with a warning), or any file is malformed (file, line, field).
    """
    ids = frame_ids(gt_dir, split)
    pred_dir = Path(pred_dir)
    warnings = _coverage_warnings(pred_dir, ids, allow_missing)
    unknown: dict[str, list[str]] = {}
    gt_unknown: dict[str, list[str]] = {}
    dt = read_annotations(pred_dir, ids, True, unknown)
    report = evaluate(read_annotations(gt_dir, ids, False, gt_unknown), dt)
    report.warnings = (warnings + _name_warnings(gt_unknown, Path(gt_dir), "ground-truth box(es)")
                       + _name_warnings(unknown, pred_dir) + _box_warnings(dt, pred_dir))
    return report


def _name_warnings(unknown: dict[str, list[str]], folder: Path, what: str = "prediction(s)") -> list[str]:
    """Boxes (predictions, or ground truth) with a class name KITTI does not know (a typo such as `Kar`): no metric
    scores them (a ground-truth box of such a class is no target, so a detection of it can count as a false
    positive)."""
    if not unknown:
        return []
    n = sum(len(v) for v in unknown.values())
    shown = "; ".join(f"{path}: {', '.join(sorted(set(names)))}" for path, names in list(unknown.items())[:3])
    more = f"; ... ({len(unknown) - 3} more files)" if len(unknown) > 3 else ""
    known = ", ".join(n_.capitalize() if n_ != "dontcare" else "DontCare" for n_ in NAMES)
    return [f"{folder}: {n} {what} in {len(unknown)} file(s) have a class name KITTI does not know and are "
            f"ignored by every metric ({shown}{more}); expected one of {known}"]


def evaluate_folders(gt_dir: str | Path, pred_dir: str | Path, split: str | Path | None = None,
                     allow_missing: bool = False) -> dict[str, float]:
    """`kitti_report(...).ap`: the AP table alone."""
    return kitti_report(gt_dir, pred_dir, split, allow_missing).ap


def format_table(report: KittiReport, setting: str = "strict") -> str:
    """The familiar console table: per class, R40 and R11 rows of bbox / bev / 3d / aos, easy / moderate / hard.
    An AP whose class and difficulty has too few valid ground-truth boxes for 100 shows its ceiling beside it."""
    lines = []
    for c, cls in enumerate(CLASSES):
        thr = MIN_OVERLAP[setting]
        counts = [report.valid_gt[f"{cls}/{d}"] for d in DIFFICULTIES]
        few = f"  [valid ground truth {' / '.join(map(str, counts))}]" if min(counts) < N_SAMPLE else ""
        lines.append(f"{cls} AP@{thr[0][c]:.2f}, {thr[1][c]:.2f}, {thr[2][c]:.2f} ({setting}):{few}")
        for rp in (40, 11):
            for metric in ("bbox", "bev", "3d", "aos"):
                vals = []
                for d in DIFFICULTIES:
                    v, cap = report.ap[f"{cls}/{metric}/R{rp}/{setting}/{d}"], report.ceiling(cls, rp, d)
                    note = " (no GT)" if report.valid_gt[f"{cls}/{d}"] == 0 else f" (max {cap:.2f})"
                    vals.append(f"{v:.4f}" + (note if cap < 100.0 else ""))
                lines.append(f"  {metric:<4} AP_R{rp}: {', '.join(vals)}")
    return "\n".join(lines)


CEILING_NOTE = ("(max X: with fewer than 41 valid ground-truth boxes of a class and difficulty, the official 41-point "
                "sampling caps AP at X even for perfect detections)")


def write_json(report: KittiReport, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(report.to_json(), indent=1, sort_keys=True))
