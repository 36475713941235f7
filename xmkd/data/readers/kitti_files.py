"""Parsers for KITTI's text files: calibration (`key: v1 v2 ...`) and `label_2` object lines.

Shared by the KITTI object, KITTI raw and SemanticKITTI readers (also SemanticKITTI's per-scan tables `poses.txt` and
`times.txt`); every error names the file and line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmkd.data.readers.base import read_text
from xmkd.errors import XmkdDataError

# the columns of a KITTI label / result line, as named in the object devkit's readme
OBJECT_FIELDS = ("type", "truncated", "occluded", "alpha", "bbox_left", "bbox_top", "bbox_right", "bbox_bottom",
                 "height", "width", "length", "x", "y", "z", "rotation_y", "score")
# A number as the devkit's C++ reader (`fscanf %f`) and every KITTI writer spell it: no digit separators, no comma
# decimal, no surrounding text. Python's float() also takes "1_000", which no KITTI tool writes.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NUMBERS = re.compile(rf"(?:{_NUMBER.pattern} )*{_NUMBER.pattern}")  # a whole line's numbers, one space apart
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)

KITTI_CALIB_SHAPES = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3),
                      "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4), "Tr": (3, 4)}


def read_calib_file(path: str | Path) -> dict[str, np.ndarray]:
    """`key: numbers...` lines -> {key: float64 array}. Lines whose values are not numbers (KITTI raw's
    `calib_time: 09-Jan-2012 ...`) are skipped; known keys are reshaped (P* to 3x4, R0_rect to 3x3, ...)."""
    path = Path(path)
    text = read_text(path, "calibration")
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise XmkdDataError(f"line {lineno}: expected 'key: values', got {line[:40]!r}", source=str(path))
        key, values = line.split(":", 1)
        try:
            arr = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError:
            continue
        if not np.isfinite(arr).all():
            raise XmkdDataError(f"line {lineno}: {key.strip()} holds NaN or Inf; expected finite numbers",
                                source=str(path), field=key.strip())
        shape = KITTI_CALIB_SHAPES.get(key.strip())
        if shape is not None:
            if arr.size != shape[0] * shape[1]:
                raise XmkdDataError(f"line {lineno}: {key} has {arr.size} values, expected "
                                    f"{shape[0] * shape[1]}", source=str(path), field=key.strip())
            arr = arr.reshape(shape)
        out[key.strip()] = arr
    return out


def read_table(path: str | Path, columns: int, what: str) -> np.ndarray:
    """A per-scan text table (SemanticKITTI `poses.txt`: 12 numbers a line, `times.txt`: 1) -> (lines, columns)
    float64. Every line must hold `columns` finite numbers; an error names the file and the line."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(read_text(path, what).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != columns:
            raise XmkdDataError(f"line {lineno}: {len(parts)} values, expected {columns}", source=str(path))
        try:
            row = [float(v) for v in parts]
        except ValueError:
            raise XmkdDataError(f"line {lineno}: expected {columns} numbers, got {line.strip()[:60]!r}",
                                source=str(path)) from None
        if not np.isfinite(row).all():
            raise XmkdDataError(f"line {lineno}: NaN or Inf; expected finite numbers", source=str(path))
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(len(rows), columns)


def require_keys(calib: dict[str, np.ndarray], keys: tuple[str, ...], path: str | Path, why: str = "") -> None:
    """Every key must be in the parsed file; `why` says what needs them (appended to the error)."""
    for key in keys:
        if key not in calib:
            raise XmkdDataError(f"missing calibration key {key!r} (have {sorted(calib)}){why}", source=str(path),
                                field=key)


@dataclass
class KittiObjects:
    """The objects of one `label_2` file (M rows), columns as in the file."""

    names: np.ndarray  # (M,) str: Car, Van, Truck, Pedestrian, Person_sitting, Cyclist, Tram, Misc, DontCare
    truncation: np.ndarray  # (M,) float
    occlusion: np.ndarray  # (M,) int: 0 visible, 1 partly, 2 largely occluded, 3 unknown
    alpha: np.ndarray  # (M,)
    bbox: np.ndarray  # (M, 4) x1, y1, x2, y2 in pixels
    dimensions: np.ndarray  # (M, 3) h, w, l in metres
    location: np.ndarray  # (M, 3) bottom centre in the rectified camera frame
    rotation_y: np.ndarray  # (M,)
    score: np.ndarray | None  # (M,) for result files (16 columns)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def camera_boxes(self) -> np.ndarray:
        """(M, 7) = (x, y, z, h, w, l, ry), the form `xmkd.geometry.boxes` converts."""
        return np.concatenate([self.location, self.dimensions, self.rotation_y[:, None]], 1)


def object_line_values(parts: list[str], lineno: int, source: str) -> list[float]:
    """The numbers of one split label / result line (`parts[0]` is the type; 15 or 16 columns, counted by the
    caller): each must be a finite number spelled plainly. The error names the line, the field (OBJECT_FIELDS),
    its column and the text found."""
    if _NUMBERS.fullmatch(" ".join(parts[1:])):  # the common case, at one regex match per line
        values = [float(v) for v in parts[1:]]
        if all(map(math.isfinite, values)):
            return values
    values = []
    for col, text in enumerate(parts[1:], 2):
        field = OBJECT_FIELDS[col - 1] if col <= len(OBJECT_FIELDS) else f"column {col}"
        where = f"line {lineno}: field {field!r} (column {col}) is {text!r}"
        if _NON_FINITE.fullmatch(text):
            raise XmkdDataError(f"{where}; expected a finite number", source=source)
        if not _NUMBER.fullmatch(text):
            hint = " (a comma decimal? write a point)" if re.fullmatch(r"[+-]?\d*,\d+", text) else ""
            raise XmkdDataError(f"{where}; expected a number{hint}", source=source)
        value = float(text)
        if not math.isfinite(value):  # 1e999
            raise XmkdDataError(f"{where}; expected a finite number", source=source)
        values.append(value)
    return values


def check_label_ranges(kind: str, values: np.ndarray, lineno: int, source: str) -> None:
    """The ranges of the object devkit's readme for one label line (`values`: its 14 numbers): truncated in [0, 1],
    occluded in {0, 1, 2, 3}, height / width / length >= 0; DontCare lines (-1 in each) are exempt. A negative size
    would otherwise pass `prepare` and break every load of the frame, blamed on its point file."""
    if kind == "DontCare":
        return
    truncated, occluded = values[0], values[1]
    if not 0.0 <= truncated <= 1.0:
        raise XmkdDataError(f"line {lineno}: field 'truncated' (column 2) is {truncated:g}; expected a number in "
                            f"[0, 1] (-1 only for DontCare)", source=source)
    if occluded not in (0, 1, 2, 3):
        raise XmkdDataError(f"line {lineno}: field 'occluded' (column 3) is {occluded:g}; expected 0, 1, 2 or 3 "
                            f"(-1 only for DontCare)", source=source)
    for col, field in ((9, "height"), (10, "width"), (11, "length")):
        if values[col - 2] < 0:
            raise XmkdDataError(f"line {lineno}: field {field!r} (column {col}) is {values[col - 2]:g}; expected a "
                                f"size >= 0 metres for a {kind} (-1 only for DontCare)", source=source)


def read_label_file(path: str | Path, ground_truth: bool = True) -> KittiObjects:
    """Parse a KITTI `label_2` file (15 columns) or a result file (16 columns, with score); every number is checked
    by `object_line_values` (file, line, field), and a label file's ranges by `check_label_ranges`
    (`ground_truth=False`: a prediction file, whose unestimated fields may be -1)."""
    path = Path(path)
    lines = [(n, line.split()) for n, line in enumerate(read_text(path, "label").splitlines(), 1) if line.strip()]
    width = len(lines[0][1]) if lines else 15
    for lineno, parts in lines:
        if len(parts) != width or width not in (15, 16):
            raise XmkdDataError(f"line {lineno}: expected 15 columns (16 with a score) in every line, got "
                                f"{len(parts)}", source=str(path))
    num = np.array([object_line_values(p, n, str(path)) for n, p in lines], dtype=np.float64)
    num = num.reshape(len(lines), width - 1)
    if ground_truth and width == 15:  # result files carry -1 for what a detector does not estimate
        for (lineno, parts), row in zip(lines, num):
            check_label_ranges(parts[0], row, lineno, str(path))
    return KittiObjects(
        names=np.array([p[0] for _, p in lines], dtype=str).reshape(len(lines)),
        truncation=num[:, 0],
        occlusion=num[:, 1].astype(np.int64),
        alpha=num[:, 2],
        bbox=num[:, 3:7],
        dimensions=num[:, 7:10],
        location=num[:, 10:13],
        rotation_y=num[:, 13],
        score=num[:, 14] if width == 16 else None,
    )
