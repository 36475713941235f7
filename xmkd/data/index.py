"""`xmkd prepare` and `xmkd inspect`: validate a dataset once, write its compact index, summarise it.

The index (`<out>/index.json`) holds one record per frame (relative file paths, calibration, poses, boxes,
split membership, per-frame statistics) plus the list of bad files. While `prepare` runs, every checked
frame is appended to `index.partial.jsonl`; an interrupted run resumes from it, and the final index is
written atomically. A bad file is reported with its reason and never stops the others.

`cameras` (None = every camera, [] = none, or names) chooses which cameras are checked and indexed: with none,
images and camera calibration are not needed (LiDAR-only use; see each reader for what stays required).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from xmkd import __version__
from xmkd.data.readers import READERS, make_reader
from xmkd.data.readers.base import FrameRecord
from xmkd.errors import XmkdDataError, XmkdError
from xmkd.io import atomic_write_text

if TYPE_CHECKING:
    from xmkd.config import DataConfig

INDEX_NAME = "index.json"
PARTIAL_NAME = "index.partial.jsonl"


@dataclass
class PrepareReport:
    index_path: Path
    frames: int
    splits: dict[str, int]
    bad: list[dict[str, str]] = field(default_factory=list)  # {"frame", "file", "reason"}; a shared file: per frame
    resumed: int = 0
    unlabelled: dict[str, int] = field(default_factory=dict)  # split -> frames without labels (where some lack them)
    label_kind: str = "point labels"


def _split_table(records: list[FrameRecord]) -> dict[str, list[str]]:
    splits: dict[str, list[str]] = {}
    for rec in records:
        for s in rec["splits"]:
            splits.setdefault(s, []).append(rec["id"])
    return splits


def _bad(rec: FrameRecord, err: XmkdDataError) -> list[dict[str, str]]:
    """The bad-file entries of a frame: its error, then the errors it carries (`err.also`: a shared file's)."""
    return [{"frame": rec["id"], "file": e.source or "", "reason": str(e)} for e in (err, *err.also)]


def _entries(entry: dict | list) -> list[dict]:
    return entry if isinstance(entry, list) else [entry]  # an interrupted run of an older xmkd logged one dict


def label_word(reader) -> str:
    """What a frame's labels are called for this dataset ("point labels", "boxes"), or "" when it has none."""
    return {"labels": "point labels", "boxes": "boxes"}.get(reader.label_kind or "", "")


def unlabelled_counts(records: list[FrameRecord], reader) -> dict[str, int]:
    """Split -> frames of it without labels (`reader.label_kind`), for the splits that have such frames; {} for a
    dataset without labels (KITTI raw)."""
    if not reader.label_kind:
        return {}
    counts: Counter = Counter()
    for r in records:
        if not r.get(reader.label_kind):
            counts.update(r["splits"])
    return dict(sorted(counts.items()))


def format_bad(bad: list[dict[str, str]]) -> list[str]:
    """Lines listing bad files: "  <frame>: <reason>", and one line for a reason that many frames share (a
    sequence's calibration or tables, a date folder's calibration): "  <n> frames (<a>, <b>, ...): <reason>"."""
    groups: dict[str, list[str]] = {}
    for b in bad:
        groups.setdefault(b["reason"], []).append(b["frame"])
    lines = []
    for reason, frames in groups.items():
        if len(frames) == 1:
            lines.append(f"  {frames[0]}: {reason}")
        else:
            shown = ", ".join(frames[:3]) + (", ..." if len(frames) > 3 else "")
            lines.append(f"  {len(frames)} frames ({shown}): {reason}")
    return lines


def bad_file_count(bad: list[dict[str, str]]) -> int:
    """Distinct bad files (a shared file counts once however many frames it spoils)."""
    return len({b["file"] or b["reason"] for b in bad})


def _resume(partial: Path, header: dict[str, Any]) -> dict[str, dict]:
    """The frames an interrupted `prepare` already checked, from its log `partial` (a header line, then one JSON
    entry per frame): id -> entry. A log of another dataset / root / split / camera choice, or whose header is torn
    (killed while writing it), is deleted: the run starts over. A torn last line (killed mid-write) and any other
    unreadable line are dropped, and the log is rewritten without them, so that new entries are not glued onto a
    torn one; those frames are checked again."""
    if not partial.is_file():
        return {}
    lines = partial.read_bytes().split(b"\n")  # the last item is b"" unless the last line is torn

    def parse(line: bytes) -> Any:
        try:
            return json.loads(line)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            return None

    if len(lines) < 2 or parse(lines[0]) != header:
        partial.unlink()
        return {}
    done: dict[str, dict] = {}
    for entry in map(parse, lines[1:-1]):
        if isinstance(entry, dict) and isinstance(entry.get("id"), str) and ("record" in entry) != ("bad" in entry):
            done[entry["id"]] = entry
    if lines[-1] or len(done) != len(lines) - 2:  # something to drop: rewrite the log with what is whole
        atomic_write_text(partial, "".join(json.dumps(e) + "\n" for e in (header, *done.values())))
    return done


def prepare(dataset: str, root: str | Path, out: str | Path, splits: Sequence[str] | None = None,
            progress: bool = True, cameras: Sequence[str] | None = None) -> PrepareReport:
    """Check every frame of `dataset` under `root` and write `<out>/index.json`; resumable. `cameras`: None =
    every camera, [] = none (LiDAR only), else these names."""
    reader = make_reader(dataset, root, cameras=cameras)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = {"dataset": dataset, "root": str(Path(root).resolve()), "splits": sorted(splits) if splits else None,
              "cameras": None if cameras is None else list(cameras)}
    partial = out / PARTIAL_NAME
    done = _resume(partial, header)
    records = reader.records(splits)
    resumed = sum(r["id"] in done for r in records)
    fresh = not partial.is_file()
    with open(partial, "a") as log:
        if fresh:
            log.write(json.dumps(header) + "\n")
        bar = tqdm(records, desc=f"prepare {dataset}", unit="frame", disable=not progress, initial=0)
        for i, rec in enumerate(bar):
            if rec["id"] in done:
                continue
            try:
                entry = {"id": rec["id"], "record": reader.check(rec)}
            except XmkdDataError as err:
                entry = {"id": rec["id"], "bad": _bad(rec, err)}
            log.write(json.dumps(entry) + "\n")
            done[rec["id"]] = entry
            if i % 50 == 0:
                log.flush()
                os.fsync(log.fileno())
    good = [done[r["id"]]["record"] for r in records if "record" in done[r["id"]]]
    bad = [b for r in records if "bad" in done[r["id"]] for b in _entries(done[r["id"]]["bad"])]
    split_table = _split_table(good)
    index = {"format": "xmkd-index/1", "xmkd_version": __version__, **header,
             "meta": reader.index_meta(), "split_ids": split_table, "frames": good, "bad": bad}
    path = atomic_write_text(out / INDEX_NAME, json.dumps(index, separators=(",", ":")))
    partial.unlink()
    return PrepareReport(path, len(good), {k: len(v) for k, v in split_table.items()}, bad, resumed,
                         unlabelled_counts(good, reader), label_word(reader))


def index_path(d: DataConfig) -> Path:
    """A config data section's prepared index: its `index`, else <root>/xmkd_index."""
    return Path(d.index) if d.index else Path(d.root) / "xmkd_index"


def load_index(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        gone = next((p for p in (path.parent.parent, path.parent) if not p.exists()), None)
        why = f" ({gone} does not exist: is the dataset root or index in the config right?)" if gone else ""
        raise XmkdError(f"{path}: no index here{why}; run `xmkd prepare` first") from None
    except json.JSONDecodeError as err:
        raise XmkdDataError(f"corrupt index: {err}", source=str(path)) from None
    if index.get("format") != "xmkd-index/1":
        raise XmkdDataError(f"not an xmkd index (format {index.get('format')!r})", source=str(path))
    return index


class IndexedFrames:
    """The frames of one split of a prepared dataset, loaded on demand: `frames[i]` is a `Frame`. `cameras` (None =
    every camera in the index, [] = none, or names) must be among the cameras the index was prepared with."""

    def __init__(self, index: str | Path | dict, split: str, label_space: str | None = None,
                 cameras: Sequence[str] | None = None, sweeps: int = 0, root: str | Path | None = None,
                 why_cameras: str = ""):
        self.index = index if isinstance(index, dict) else load_index(index)
        self.where = "the index" if isinstance(index, dict) else str(index)
        self.split = split
        if split not in self.index["split_ids"]:
            raise XmkdError(f"split {split!r} not in the index (have {sorted(self.index['split_ids'])})")
        require_prepared_cameras(self.index, cameras, why_cameras)
        ids = set(self.index["split_ids"][split])
        self.records = [r for r in self.index["frames"] if r["id"] in ids]
        self.reader = make_reader(self.index["dataset"], root or self.index["root"], label_space, cameras, sweeps,
                                  meta=self.index.get("meta"))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        return self.reader.load(self.records[i])

    def require_cameras(self, who: str) -> IndexedFrames:
        """Self; an error when the index was prepared with no camera (`--cameras none`) and `who` (a recipe) needs
        cameras — the same error as asking for a camera by name that was not prepared."""
        if self.index.get("cameras") == [] and self.reader.cameras is None:
            raise XmkdError(f"{self.where}: {who} needs cameras, and cameras were not prepared: the index was "
                            "prepared with --cameras none; run `xmkd prepare` again without it (or with --cameras "
                            "NAMES)")
        return self

    def require_labels(self, who: str, kind: str = "labels") -> IndexedFrames:
        """Self when every frame of the split has `kind` ("labels": point labels, "boxes": 3D boxes); else an
        XmkdDataError naming the index, the split and how many (and which) frames lack them."""
        missing = [r["id"] for r in self.records if not r.get(kind)]
        if missing:
            what = "point labels" if kind == "labels" else "labelled boxes"
            examples = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise XmkdDataError(f"{len(missing)} of the {len(self.records)} frames of split {self.split!r} have no "
                                f"{what} ({examples}); {who} trains and validates on labelled frames: choose a "
                                "labelled split, or add the label files and run `xmkd prepare` again",
                                source=self.where, field=kind)
        return self


def require_prepared_cameras(index: dict[str, Any], cameras: Sequence[str] | None, why: str = "") -> None:
    """Every camera asked for (None: every camera there is) must be among those the index was prepared with; `why`
    (what needs them) goes into the error."""
    prepared = index.get("cameras")  # None: prepared with every camera
    missing = [c for c in cameras or () if prepared is not None and c not in prepared]
    if missing:
        raise XmkdError(f"cameras {missing} were not prepared{f' ({why})' if why else ''}: the index was prepared "
                        "with --cameras "
                        f"{','.join(prepared) or 'none'}; run `xmkd prepare` again with them")


def summarize(records: list[FrameRecord], reader, bad: list[dict] | None = None) -> dict[str, Any]:
    """The `xmkd inspect --json` object from checked records: `cameras` maps each camera to its image sizes
    ("WxH" -> frames), `frames_without_point_labels` (`_boxes` for detection datasets) the splits that hold frames
    without labels, `bad` lists every bad file ({"frame", "file", "reason"}) and `bad_files` counts the distinct
    files."""
    points = np.array([r["stats"]["points"] for r in records]) if records else np.zeros(0)
    hist: Counter = Counter()
    for r in records:
        hist.update({int(k): v for k, v in r["stats"].get("labels", {}).items()})
    space = reader.label_space
    lut = reader.raw_lut() if hist else np.zeros(0, np.int64)
    classes: Counter = Counter()
    for raw, count in hist.items():
        cls = lut[raw] if 0 <= raw < len(lut) else space.ignore_index
        classes["ignore" if cls == space.ignore_index else space.class_names[cls]] += count
    sizes: dict[str, Counter] = {}
    boxes: Counter = Counter()
    for r in records:
        for name, (w, h) in r["stats"].get("cameras", {}).items():
            if reader.wanted([name]):
                sizes.setdefault(name, Counter())[f"{w}x{h}"] += 1
        boxes.update(r["stats"].get("boxes", {}))
    cameras = {name: dict(sorted(c.items(), key=lambda kv: -kv[1])) for name, c in sorted(sizes.items())}
    unlabelled = {f"frames_without_{label_word(reader).replace(' ', '_')}": unlabelled_counts(records, reader)}
    return {
        "dataset": reader.name,
        "root": str(reader.root),
        "frames": len(records),
        "splits": {k: len(v) for k, v in sorted(_split_table(records).items())},
        **(unlabelled if reader.label_kind else {}),
        "points_per_frame": {"min": int(points.min()) if len(points) else 0,
                             "mean": float(points.mean()) if len(points) else 0.0,
                             "max": int(points.max()) if len(points) else 0},
        "cameras": cameras,
        "label_space": space.name if reader.label_kind == "labels" else None,  # None: no point labels (boxes)
        "label_histogram": dict(sorted(classes.items(), key=lambda kv: -kv[1])),
        "boxes_per_class": dict(sorted(boxes.items())),
        "bad_files": bad_file_count(bad or []),
        "bad": list(bad or []),
    }


def inspect(dataset: str, root: str | Path, index: str | Path | None = None, progress: bool = False,
            label_space: str | None = None, cameras: Sequence[str] | None = None, check: bool = False
            ) -> dict[str, Any]:
    """Summary of a dataset (`summarize`), with `source` saying what it was read from: "index" (its path and
    modification time in `index` and `index_written`: `index`, else `<root>/xmkd_index` when it holds one), or
    "files" (every frame checked now, nothing written; always so with `check`). An `index` that does not exist or
    indexes another dataset, and `cameras` that the index was not prepared with, are errors."""
    cand = Path(index) if index else Path(root) / "xmkd_index"
    found = (cand / INDEX_NAME).is_file() or (cand.is_file() and cand.suffix == ".json")
    if index and not found:
        raise XmkdError(f"{index}: no index here (expected {INDEX_NAME}, or a folder holding one); run `xmkd "
                        "prepare` first, or leave out --index to check the files now")
    if found and not check:
        idx = load_index(cand)
        indexed_root = Path(idx.get("root", root))
        if (index and idx["dataset"] == dataset and indexed_root.resolve() != Path(root).resolve()
                and indexed_root.is_dir()):
            # another dataset copy that still exists: its summary is not this root's (a moved root passes)
            raise XmkdError(f"{cand} indexes the dataset at {indexed_root}, not {root}: pass --root {indexed_root}, "
                            f"or leave out --index to check {root} itself")
        if idx["dataset"] == dataset:
            require_prepared_cameras(idx, cameras)
            reader = make_reader(dataset, root, label_space, cameras, meta=idx.get("meta"))
            path = cand / INDEX_NAME if cand.is_dir() else cand
            written = datetime.fromtimestamp(path.stat().st_mtime).isoformat(sep=" ", timespec="seconds")
            return {**summarize(idx["frames"], reader, idx["bad"]), "source": "index", "index": str(path),
                    "index_written": written}
        if index:
            raise XmkdError(f"{cand} indexes {idx['dataset']}, not {dataset}")
    reader = make_reader(dataset, root, label_space, cameras)
    records, bad = [], []
    for rec in tqdm(reader.records(), desc=f"inspect {dataset}", unit="frame", disable=not progress):
        try:
            records.append(reader.check(rec))
        except XmkdDataError as err:
            bad += _bad(rec, err)
    return {**summarize(records, reader, bad), "source": "files", "index": None, "index_written": None}


def describe_frame(dataset: str, root: str | Path, frame_id: str, label_space: str | None = None,
                   cameras: Sequence[str] | None = None) -> dict[str, Any]:
    """One frame, read through the reader: what a user checks before trusting a dataset."""
    reader = make_reader(dataset, root, label_space, cameras)
    rec = reader.find(frame_id)
    frame = reader.load(reader.check(rec))
    out = {"id": frame.frame_id, "points": frame.num_points, "point_fields": list(frame.point_fields),
           "cameras": {n: list(c.image_size) for n, c in frame.cameras.items()},
           "boxes": dict(Counter(frame.boxes.names.tolist())) if frame.boxes is not None else {},
           "splits": rec["splits"], "meta": {k: v for k, v in frame.meta.items() if isinstance(v, (str, int, float))}}
    if frame.labels is not None:
        ids, counts = np.unique(frame.labels, return_counts=True)
        space = reader.label_space
        out["labels"] = {("ignore" if i == space.ignore_index else space.class_names[i]): int(c)
                         for i, c in zip(ids, counts)}
    return out


__all__ = ["READERS", "prepare", "load_index", "IndexedFrames", "inspect", "summarize", "describe_frame"]
