"""The reader contract and what every reader shares.

A reader turns one dataset's on-disk format into `Frame`s in three steps:
- `scan(splits)`: discover the frames (cheap; file paths, calibration, poses, split membership) as
  `FrameRecord`s — plain JSON-able dicts, the rows of the index `xmkd prepare` writes;
- `check(record)`: open every file of the frame, validate it (sizes, counts, calibration, labels) and fill
  `record["stats"]` (points, raw label histogram, image sizes, boxes per class); raises `XmkdDataError`
  naming the file and the problem;
- `load(record)`: read the frame as a `Frame` in the configured label space (with extra sweeps merged in
  if asked).
Training reads only the index and the files; `scan` may use heavy tooling (the nuScenes devkit) once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xmkd.data.frame import Boxes, CameraView, Frame
from xmkd.data.labels import LabelSpace, get_label_space
from xmkd.errors import XmkdDataError, XmkdNameError

FrameRecord = dict[str, Any]  # {"id", "splits", "lidar", "labels", "cameras", "ego_pose", "timestamp", "boxes",
#                                "sweeps", "meta", "stats"}; paths are relative to the dataset root


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def lfs_error(path: str | Path, head: bytes | None = None) -> XmkdDataError | None:
    """The error for a Git LFS pointer file standing in for a data file (a clone without `git lfs pull`), or None
    when `head` (the file's first bytes; read from `path` when not given) is not one."""
    if head is None:
        try:
            with open(path, "rb") as f:
                head = f.read(200)
        except OSError:
            return None
    if not head.startswith(LFS_POINTER):
        return None
    size = next((line.split()[1] for line in head.decode("ascii", "replace").splitlines()
                 if line.startswith("size ") and len(line.split()) == 2), "?")
    return XmkdDataError(f"a Git LFS pointer (to {size} bytes), not the data: fetch the file with `git lfs pull`",
                         source=str(path))


def read_binary(path: Path, dtype: Any, what: str, per_item: int = 1, item: str = "value") -> np.ndarray:
    """The whole file as a flat array of `dtype`; a missing file, a Git LFS pointer, or a size that is not a whole
    number of items (`per_item` values of `dtype`, called `item` in the error) is an error naming the file."""
    try:
        raw = np.fromfile(path, dtype=dtype)
        size = Path(path).stat().st_size
    except FileNotFoundError:
        raise XmkdDataError(f"{what} file is missing", source=str(path)) from None
    except OSError as err:
        raise XmkdDataError(f"unreadable {what} file: {err}", source=str(path)) from None
    if raw[: len(LFS_POINTER) // raw.itemsize + 1].tobytes().startswith(LFS_POINTER):
        raise lfs_error(path) or XmkdDataError("a Git LFS pointer, not the data", source=str(path))
    step = raw.itemsize * per_item
    if size % step:
        raise XmkdDataError(f"truncated: {size} bytes is not a whole number of {step}-byte {item}s",
                            source=str(path))
    return raw


def read_text(path: Path, what: str) -> str:
    """A text file (calibration, labels, per-scan tables, split lists), without a leading UTF-8 byte-order mark; a
    missing file, a folder, a Git LFS pointer and bytes that are not UTF-8 are errors naming the file (and the
    line)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise XmkdDataError(f"{what} file is missing", source=str(path)) from None
    except IsADirectoryError:
        raise XmkdDataError(f"is a folder; expected a {what} file", source=str(path)) from None
    except OSError as err:
        raise XmkdDataError(f"unreadable {what} file: {err}", source=str(path)) from None
    lfs = lfs_error(path, data[:200])
    if lfs is not None:
        raise lfs
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # a BOM (Windows editors) would glue onto the first token
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise XmkdDataError(f"line {line}: byte {data[err.start]:#04x} is not UTF-8 text; expected a plain text "
                            f"{what} file", source=str(path)) from None


def read_split_table(path: Path, item: str) -> dict[str, list[str]]:
    """A custom split table (SemanticKITTI `xmkd_splits.json`, nuScenes `<version>/splits.json`): a JSON object of
    split name -> list of `item` names (strings). Raises XmkdDataError naming the file, the split at fault and
    what was expected; a wrong table would otherwise put every frame silently into no split."""
    expected = f"expected a JSON object of split name -> list of {item} names (strings)"
    try:
        table = json.loads(read_text(path, "split table"))
    except json.JSONDecodeError as err:
        raise XmkdDataError(f"not valid JSON: {err}", source=str(path)) from None
    if not isinstance(table, dict):
        raise XmkdDataError(f"the top level is a JSON {type(table).__name__}; {expected}, e.g. "
                            f'{{"train": ["00", "01"], "val": ["08"]}}', source=str(path))
    for split, names in table.items():
        if not isinstance(names, list):
            raise XmkdDataError(f"{expected}; got {json.dumps(names)}", source=str(path), field=f"split {split!r}")
        bad = [n for n in names if not isinstance(n, str)]
        if bad:
            example = f'"{bad[0]:02d}"' if isinstance(bad[0], int) else json.dumps(str(bad[0]))
            raise XmkdDataError(f"{expected}; got {json.dumps(bad[0])} (write names as strings, e.g. {example})",
                                source=str(path), field=f"split {split!r}")
    return table


def require_points(count: int, source: str, field: str | None = None) -> None:
    """A point cloud without a single point is a bad file (nothing to train on, and no shape to check)."""
    if count == 0:
        raise XmkdDataError("empty: 0 points; expected at least one point", source=source, field=field)


def read_points(path: Path, columns: int, dtype: Any = np.float32) -> np.ndarray:
    """A raw binary point file of `columns` values per point -> (N, columns), N > 0; truncated and empty files are
    errors, not reshapes."""
    raw = read_binary(path, dtype, "point cloud", columns, "point")
    require_points(raw.size, str(path))
    return raw.reshape(-1, columns)


def require_finite(values: np.ndarray, source: str, field: str = "points",
                   columns: Sequence[str] | None = None) -> None:
    """Raise when an array holds NaN or Inf: (N, C) rows of C columns, or (H, W, C) pixels of C channels (a range
    image). The error names how many rows (pixels), the first one and its column (channel) by `columns` name."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating) or values.size == 0:
        return
    image = values.ndim == 3
    flat = values.reshape(-1, values.shape[-1]) if image else values.reshape(len(values), -1)
    bad = ~np.isfinite(flat)
    if not bad.any():
        return
    rows = np.nonzero(bad.any(1))[0]
    row, col = int(rows[0]), int(np.nonzero(bad[rows[0]])[0][0])
    name = columns[col] if columns is not None and col < len(columns) else f"{'channel' if image else 'column'} {col}"
    if image:
        where, unit = f"pixel (row {row // values.shape[1]}, col {row % values.shape[1]}), {name}", "pixel(s)"
    else:
        where, unit = f"row {row}, {name}", "row(s)"
    raise XmkdDataError(f"{len(rows)} {unit} hold NaN or Inf (first: {where} = {flat[row, col]}); expected finite "
                        "numbers", source=source, field=field)


def read_label_file(path: Path, dtype: Any, count: int | None) -> np.ndarray:
    """Per-point labels; their number must equal the point count (None: the point file was bad, so only the file
    itself is checked)."""
    labels = read_binary(path, dtype, "label", item="label")
    if count is not None and labels.size != count:
        raise XmkdDataError(f"{labels.size} labels for {count} points", source=str(path), field="labels")
    return labels


EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _open_image(path: Path) -> Image.Image:
    """The decoded image; missing, undecodable and Git LFS pointer files are errors naming the file."""
    try:
        img = Image.open(path)
    except FileNotFoundError:
        raise XmkdDataError("image file is missing", source=str(path)) from None
    except OSError as err:
        raise lfs_error(path) or XmkdDataError(f"unreadable image: {err}", source=str(path)) from None
    try:
        img.load()
    except OSError as err:
        img.close()
        raise XmkdDataError(f"unreadable image: {err}", source=str(path)) from None
    if img.mode not in EIGHT_BIT_MODES:  # Pillow's convert("RGB") clips 16-bit values: an all-white image
        mode = img.mode
        img.close()
        raise XmkdDataError(f"a {mode} image (16- or 32-bit, e.g. a depth map); expected an 8-bit image",
                            source=str(path))
    return img


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    with _open_image(path) as img:
        return np.asarray(img.convert("RGB"))


def read_depth_png(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) float32 metres of a 16-bit depth PNG in KITTI's encoding (value = depth x 256, 0 = no depth: KITTI's
    depth benchmark, CaDDN's `depth_2` maps) [CMKD: pcdet/datasets/kitti/kitti_dataset_cmkd.py get_depth_map].
    XmkdDataError naming the file when it is missing, undecodable, not a 16-bit grayscale PNG (a 32-bit image, e.g. a
    TIFF under a .png name, would give depths of kilometres; an 8-bit one, depths under a metre), or not `size` (W, H).
    PIL opens a 16-bit PNG as I;16 (mode I in Pillow before 10, whose values still fit 16 bits)."""
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise XmkdDataError("depth map file is missing", source=str(path)) from None
    except OSError as err:
        raise lfs_error(path) or XmkdDataError(f"unreadable depth map: {err}", source=str(path)) from None
    with img:
        if img.format != "PNG" or img.mode not in ("I;16", "I;16B", "I"):
            raise XmkdDataError(f"a {img.format} image of mode {img.mode}; expected a 16-bit grayscale PNG (metres x "
                                "256, 0 = no depth)", source=str(path))
        if size is not None and img.size != tuple(size):
            raise XmkdDataError(f"a {img.size[0]}x{img.size[1]} depth map for a {size[0]}x{size[1]} image",
                                source=str(path))
        return (np.asarray(img).astype(np.float32) / 256.0).astype(np.float32)


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) from the header; checks that the file decodes."""
    with _open_image(path) as img:
        return img.size


def shared_part(compute: Callable[[], Any]) -> tuple[Any, XmkdDataError | None]:
    """(value, None), or (None, the error) when reading a file that many frames share (a sequence's calibration or
    per-scan tables, a date folder's calibration) fails. `check` then still checks the frame's own files (see
    `also_reporting`) and raises the shared error at the end, so each frame's own bad files stay visible."""
    try:
        return compute(), None
    except XmkdDataError as err:
        return None, err


@contextmanager
def also_reporting(shared: XmkdDataError | None) -> Iterator[None]:
    """Around a frame's own checks: an error of its own carries the shared file's error (`err.also`), so that both
    are listed (prepare lists the shared one once for all its frames)."""
    try:
        yield
    except XmkdDataError as err:
        if shared is not None and shared is not err:
            err.also.append(shared)
        raise


class FileChecks:
    """Runs a frame's independent file checks one after another and keeps every `XmkdDataError`, so that `check`
    lists each bad file of a frame (a truncated point file *and* a bad label file *and* an undecodable image) and a
    user mends them all in one pass. `checks(fn, *args)` returns fn's value, or None when it raised."""

    def __init__(self) -> None:
        self.errors: list[XmkdDataError] = []

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except XmkdDataError as err:
            self.errors.append(err)
            return None

    def raise_any(self) -> None:
        """Raise the first error kept, carrying the others (and what they carried) in `.also`; nothing if none."""
        if not self.errors:
            return
        first, rest = self.errors[0], self.errors[1:]
        for err in rest:
            first.also.extend(e for e in (err, *err.also) if e not in first.also)
        self.errors = []
        raise first


def read_finite_points(path: Path, columns: Sequence[str], dtype: Any = np.float32) -> np.ndarray:
    """`read_points` of a file with these named columns, whose values must all be finite."""
    points = read_points(path, len(columns), dtype)
    require_finite(points, str(path), columns=columns)
    return points


def check_points(checks: FileChecks, path: Path, columns: Sequence[str], dtype: Any = np.float32) -> int | None:
    """Check a point file with these named columns (whole, non-empty, finite) in `checks`; returns its point count,
    known also when values are NaN / Inf, so that the per-point label file's count is still checked (both listed),
    or None when the file cannot be read as points."""
    points = checks(read_points, path, len(columns), dtype)
    if points is None:
        return None
    checks(require_finite, points, str(path), columns=columns)
    return len(points)


def cameras_hint(have: Sequence[str]) -> str:
    """What to pass instead when a camera asked for by name is missing from a frame that has the cameras `have`."""
    return f"pass {'--cameras ' + ','.join(have) + ' or ' if have else ''}--cameras none for LiDAR only"


def unreadable_record(frame_id: str, splits: list[str], lidar: str, err: XmkdDataError) -> FrameRecord:
    """A stand-in record for a file `scan` could not read (e.g. a Waymo segment), so that `prepare` lists it as bad
    and goes on; its `check` raises the error again (`raise_scan_error`)."""
    return {"id": frame_id, "splits": splits, "lidar": lidar, "labels": None, "cameras": {}, "sweeps": [], "meta": {},
            "scan_error": {"message": err.message, "source": err.source, "field": err.field}}


def raise_scan_error(record: FrameRecord) -> None:
    """Raise the error `scan` recorded for this record (`unreadable_record`), if any."""
    if record.get("scan_error"):
        raise XmkdDataError(**record["scan_error"])


def as_matrix(value: Any, shape: tuple[int, int], source: str, field: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape or not np.isfinite(arr).all():
        got = f"shape {arr.shape}" if arr.shape != shape else "NaN or Inf in it"
        raise XmkdDataError(f"expected a finite {shape[0]}x{shape[1]} matrix, got {got}", source=source, field=field)
    return arr


class DatasetReader:
    """Base class: subclasses set `name`, `default_label_space`, `camera_names`, `layout`, and implement scan /
    check / load.

    `cameras`: None = every camera the dataset has, [] = none (LiDAR only: `check` and `load` then need no image
    and no camera calibration), else the names to check and load. A record checked with a camera subset keeps
    only those cameras, so an index lists the cameras that `prepare` verified.
    """

    name = ""
    default_label_space = "nuscenes16"
    label_dtype: Any = None
    camera_names: tuple[str, ...] = ()  # every camera this dataset can have
    layout = ""  # what `scan` looks for under the root, for the error when it finds no frame
    lidar_only_layout = ""  # the same without cameras (`cameras=[]`), when it differs
    label_kind: str | None = "labels"  # the record key of a frame's labels ("boxes" for detection; None: unlabelled)

    def __init__(self, root: str | Path, label_space: str | LabelSpace | None = None,
                 cameras: Sequence[str] | None = None, sweeps: int = 0, meta: dict[str, Any] | None = None):
        self.root = Path(root)
        self.meta = dict(meta or {})
        self._memo: dict[tuple, Any] = {}
        if not self.root.is_dir():
            raise XmkdDataError("dataset root is not a folder", source=str(self.root))
        space = label_space or self.default_label_space
        self.label_space = get_label_space(space) if isinstance(space, str) else space
        self.cameras = None if cameras is None else list(cameras)  # None = every camera, [] = none
        if self.cameras == [] and self.lidar_only_layout:
            self.layout = self.lidar_only_layout  # no image folder named where none is needed
        unknown = [c for c in self.cameras or [] if c not in self.camera_names]
        if unknown:
            raise XmkdNameError(f"{self.name} has no camera {', '.join(map(repr, unknown))}; its cameras: "
                                f"{', '.join(self.camera_names)} (or none)")
        self.sweeps = sweeps

    # -- to implement -----------------------------------------------------------------------------------
    def scan(self, splits: Sequence[str] | None = None) -> Iterator[FrameRecord]:
        raise NotImplementedError

    def check(self, record: FrameRecord) -> FrameRecord:
        raise NotImplementedError

    def load(self, record: FrameRecord) -> Frame:
        raise NotImplementedError

    def index_meta(self) -> dict[str, Any]:
        """Dataset-level facts the index keeps beside the frames (e.g. nuScenes' category table)."""
        return dict(self.meta)

    def memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """Per-reader cache for things read once and shared by many frames (calibration, poses)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def raw_lut(self) -> np.ndarray:
        """Raw label id (as stored in this dataset's files) -> class of the label space."""
        return self.label_space.lut

    def records(self, splits: Sequence[str] | None = None) -> list[FrameRecord]:
        """Every frame `scan` finds; finding none is an error that says where it looked and for what."""
        found = list(self.scan(splits))
        if not found and splits:  # a split name the dataset does not have: list those it has
            have = sorted({s for rec in self.scan(None) for s in rec["splits"]})
            if have:
                raise XmkdDataError(f"no {self.name} frames in splits {list(splits)}; the splits found there: "
                                    f"{', '.join(have)}", source=str(self.root))
        if not found:
            where = f" in splits {list(splits)}" if splits else ""
            raise XmkdDataError(f"no {self.name} frames found{where}; expected {self.layout}", source=str(self.root))
        return found

    def find(self, frame_id: str | None) -> FrameRecord:
        """The record of one frame by id (None: the first frame); a missing id says where it looked."""
        found = self.records()
        if frame_id is None:
            return found[0]
        for rec in found:
            if rec["id"] == frame_id:
                return rec
        sample = ", ".join(repr(r["id"]) for r in found[:3])
        raise XmkdDataError(f"no frame {frame_id!r} among the {len(found)} {self.name} frames found there "
                            f"({self.layout}; ids look like {sample})", source=str(self.root))

    @property
    def with_cameras(self) -> bool:
        """False when no camera is wanted (LiDAR only)."""
        return self.cameras != []

    # -- shared ------------------------------------------------------------------------------------------
    def path(self, relative: str) -> Path:
        return self.root / relative

    def wanted(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if self.cameras is None or n in self.cameras]

    def camera_views(self, record: FrameRecord) -> dict[str, CameraView]:
        views = {}
        for name in self.wanted(list(record["cameras"])):
            cam = record["cameras"][name]
            path = self.path(cam["file"])
            views[name] = CameraView(name, read_image(path), as_matrix(cam["K"], (3, 3), str(path), "K"),
                                     as_matrix(cam["T_cam_lidar"], (4, 4), str(path), "T_cam_lidar"),
                                     source=str(path))
        return views

    def check_cameras(self, record: FrameRecord) -> dict[str, list[int]]:
        """Keep only the wanted cameras in `record` (a copy that `check` owns), check each image decodes and its
        calibration is finite; returns name -> [W, H]."""
        sizes, checks = {}, FileChecks()
        have = list(record["cameras"])
        for name in self.cameras or []:  # a camera asked for by name must be there, not silently dropped
            if name not in have:
                checks.errors.append(XmkdDataError(
                    f"no {name} camera in this frame (it has {', '.join(have) or 'none'}); {cameras_hint(have)}",
                    source=self.camera_table(record), field=name))
        record["cameras"] = {n: record["cameras"][n] for n in self.wanted(have)}
        for name, cam in record["cameras"].items():  # every camera is checked, so every bad image is listed
            path = self.path(cam["file"])
            size = checks(image_size, path)
            if size is not None:
                sizes[name] = list(size)
            checks(as_matrix, cam["K"], (3, 3), str(path), "K")
            checks(as_matrix, cam["T_cam_lidar"], (4, 4), str(path), "T_cam_lidar")
        checks.raise_any()
        return sizes

    def camera_table(self, record: FrameRecord) -> str:
        """The file that lists a frame's cameras, named when a wanted camera is missing (default: its point file)."""
        return str(self.path(record["lidar"]))

    @staticmethod
    def box_stats(record: FrameRecord) -> dict[str, int]:
        names = (record.get("boxes") or {}).get("names", []) + (record.get("boxes") or {}).get("ignored_names", [])
        return dict(Counter(names))

    @staticmethod
    def boxes_of(record: FrameRecord, source: str) -> Boxes | None:
        b = record.get("boxes")
        if not b:
            return None
        arr = np.asarray(b["boxes"], dtype=np.float64).reshape(-1, 7)
        attrs = {k: np.asarray(v) for k, v in b.get("attributes", {}).items()}
        return Boxes(arr, np.asarray(b["names"], dtype=str).reshape(-1), attributes=attrs, source=source)

    def histogram(self, raw: np.ndarray) -> dict[str, int]:
        """Raw label id -> count, as JSON-able str keys."""
        ids, counts = np.unique(raw, return_counts=True)
        return {str(int(i)): int(c) for i, c in zip(ids, counts)}

    def make_frame(self, record: FrameRecord, points: np.ndarray, fields: tuple[str, ...],
                   labels: np.ndarray | None, **extra: Any) -> Frame:
        source = str(self.path(record["lidar"]))
        pose = record.get("ego_pose")
        return Frame(
            record["id"], np.ascontiguousarray(points, dtype=np.float32), fields, labels,
            cameras=self.camera_views(record), boxes=self.boxes_of(record, source),
            ego_pose=None if pose is None else as_matrix(pose, (4, 4), source, "ego_pose"),
            timestamp=float(record.get("timestamp", 0.0)), meta=dict(record.get("meta", {})), source=source, **extra,
        )


def matrix_list(m: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(m)]


def pick_sweeps(available: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` sweeps nearest in time to the keyframe, alternating past and future (past first), so 4 gives
    2 past + 2 future when both exist. Each sweep dict has "dt" (seconds, negative = past)."""
    past = sorted((s for s in available if s["dt"] < 0), key=lambda s: -s["dt"])
    future = sorted((s for s in available if s["dt"] > 0), key=lambda s: s["dt"])
    out: list[dict[str, Any]] = []
    while len(out) < count and (past or future):
        if past:
            out.append(past.pop(0))
        if future and len(out) < count:
            out.append(future.pop(0))
    return out


def merge_sweeps(points: np.ndarray, sweeps: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """Keyframe points (N, C) + sweeps [(points (M, C), T_key_sweep (4, 4), dt seconds)] -> (N + sum M, C + 1)
    in the keyframe's LiDAR frame, with the time lag |dt| as the last column (0 for keyframe points)."""
    parts = [np.column_stack([points, np.zeros(len(points), np.float32)])]
    for pts, T, dt in sweeps:
        xyz = pts[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
        moved = np.column_stack([xyz.astype(np.float32), pts[:, 3:], np.full(len(pts), abs(dt), np.float32)])
        parts.append(moved)
    return np.concatenate(parts).astype(np.float32)
