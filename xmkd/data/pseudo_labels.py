"""Offline pseudo-labels for FtD++ / xMUDA (xDPL): per target frame, the max probability and label of the 2D
(fused) and 3D predictions for every point the model saw; refinement keeps, per predicted class, the points whose
probability reaches `min(median probability of that class, 0.9)` and sets the rest to ignore."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xmkd.errors import XmkdDataError
from xmkd.io import atomic_write_bytes

IGNORE = 255


def class_thresholds(prob: np.ndarray, label: np.ndarray, num_classes: int, cap: float = 0.9) -> np.ndarray:
    """Per class min(median probability of the points predicted as that class, cap); cap where none is."""
    out = np.full(num_classes, cap, np.float64)
    for c in range(num_classes):
        p = prob[label == c]
        if len(p):
            out[c] = min(float(np.median(p)), cap)
    return out


def refine(prob: np.ndarray, label: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Labels whose probability is below their class threshold become IGNORE."""
    return np.where(prob >= thresholds[label], label, IGNORE).astype(np.int64)


@dataclass
class PseudoLabels:
    num_classes: int
    frames: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # id -> raw, points, prob/label 2d/3d
    thresholds: dict[str, np.ndarray] = field(default_factory=dict)
    path: str = ""  # the file it was read from (named in errors)

    def add(self, frame_id: str, num_points: int, raw: np.ndarray, prob_2d: np.ndarray, label_2d: np.ndarray,
            prob_3d: np.ndarray, label_3d: np.ndarray) -> None:
        self.frames[frame_id] = {"points": np.array(num_points), "raw": raw.astype(np.int64),
                                 "prob_2d": prob_2d.astype(np.float32), "label_2d": label_2d.astype(np.int64),
                                 "prob_3d": prob_3d.astype(np.float32), "label_3d": label_3d.astype(np.int64)}

    def finish(self) -> None:
        """Per-class thresholds over every frame (the refinement's statistics)."""
        for m in ("2d", "3d"):
            prob = np.concatenate([f[f"prob_{m}"] for f in self.frames.values()]) if self.frames else np.zeros(0)
            label = np.concatenate([f[f"label_{m}"] for f in self.frames.values()]) if self.frames else np.zeros(0,
                                                                                                                int)
            self.thresholds[m] = class_thresholds(prob, label, self.num_classes)

    def check_classes(self, num_classes: int, space: str, key: str = "model.pseudo_labels") -> None:
        """XmkdDataError naming `key` and the file when it was made for another number of classes than the run's
        label space `space` has (its labels would index past the classifier)."""
        if self.num_classes != num_classes:
            raise XmkdDataError(f"made for {self.num_classes} classes; this run's label space {space!r} has "
                                f"{num_classes} (a file of another dataset or label space?)", source=self.path,
                                field=key)

    def check_split(self, records: list[dict], split: str, key: str = "model.pseudo_labels") -> None:
        """That the file holds every frame of a split (index records: "id", and "stats" "points" where the index has
        it) with as many points as the dataset: a file made from another split or dataset is refused before training
        (frame ids alone can repeat across synthetic worlds). XmkdDataError naming `key`, the file and the frames."""
        missing = [r["id"] for r in records if r["id"] not in self.frames]
        if missing:
            raise XmkdDataError(f"no pseudo-labels for {len(missing)} of the {len(records)} frames of split {split!r} "
                                f"(e.g. {', '.join(missing[:3])}); make them from that split: `xmkd pseudo-label RUN "
                                f"--split {split}`", source=self.path, field=key)
        wrong = [(r["id"], int(self.frames[r["id"]]["points"]), r["stats"]["points"]) for r in records
                 if r.get("stats", {}).get("points") and int(self.frames[r["id"]]["points"]) != r["stats"]["points"]]
        if wrong:
            fid, here, there = wrong[0]
            raise XmkdDataError(f"{len(wrong)} frame(s) of split {split!r} have other point counts than the file's "
                                f"(e.g. {fid}: {here} points in the file, {there} in the dataset): a file made from "
                                "another dataset?", source=self.path, field=key)

    def refined(self, frame_id: str, points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(2D, 3D) refined labels for every keyframe point of a frame (IGNORE where unseen or unsure). `points`:
        the frame's keyframe points, checked against the file's. XmkdDataError naming the file and frame when the
        file does not hold the frame or holds another point count."""
        f = self.frames.get(frame_id)
        if f is None:
            raise XmkdDataError(f"no pseudo-labels for frame {frame_id} (was the file made from this split?)",
                                source=self.path or None)
        if points is not None and int(f["points"]) != points:
            raise XmkdDataError(f"frame {frame_id} has {int(f['points'])} points in the file and {points} in the "
                                "dataset (a file made from another dataset?)", source=self.path or None)
        out = []
        for m in ("2d", "3d"):
            full = np.full(int(f["points"]), IGNORE, np.int64)
            full[f["raw"]] = refine(f[f"prob_{m}"], f[f"label_{m}"], self.thresholds[m])
            out.append(full)
        return out[0], out[1]

    def save(self, path: str | Path) -> Path:
        arrays = {"num_classes": np.array(self.num_classes), "ids": np.array(list(self.frames), dtype=str)}
        for i, f in enumerate(self.frames.values()):
            arrays.update({f"{i}/{k}": v for k, v in f.items()})
        for m, t in self.thresholds.items():
            arrays[f"thresholds/{m}"] = t
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> PseudoLabels:
        """The file `save` wrote. XmkdDataError naming it when it is missing or is not such a file."""
        try:
            data = np.load(path)
        except FileNotFoundError:
            raise XmkdDataError("pseudo-label file is missing (run `xmkd pseudo-label`)", source=str(path)) from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # numpy refuses pickles; a cut archive
            raise XmkdDataError(f"not a pseudo-label file of `xmkd pseudo-label` ({type(err).__name__}: {err})",
                                source=str(path)) from None
        if not isinstance(data, np.lib.npyio.NpzFile):  # a single array (.npy)
            raise XmkdDataError("not a pseudo-label file of `xmkd pseudo-label` (one array, not an .npz archive)",
                                source=str(path))
        try:
            with data:
                out = cls(int(data["num_classes"]), path=str(path))
                keys = ("points", "raw", "prob_2d", "label_2d", "prob_3d", "label_3d")
                for i, fid in enumerate(data["ids"].tolist()):
                    out.frames[fid] = {k: data[f"{i}/{k}"] for k in keys}
                out.thresholds = {m: data[f"thresholds/{m}"] for m in ("2d", "3d")}
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
            what = f"no entry {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
            raise XmkdDataError(f"not a pseudo-label file of `xmkd pseudo-label` ({what})", source=str(path)) from None
        return out
