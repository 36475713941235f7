"""Label-scarce training: which frames of a training split keep their labels.

U2MKD's label-scarce regime (issue 18; the audit's paired runs, `../shared/audits/u2mkd-audit.md` §2.3): only a
fraction of the training frames, or an explicit list of them, keep their labels. The teacher (`lidar_seg`) and
the student (`u2mkd`, and the `camera_seg` baseline) read the same `LabelledFrames` options, so they choose the
same frames and the teacher has no label the student lacks (`u2mkd` checks this against the teacher checkpoint's
config). The choice depends only on the frame ids and `seed`, never on the run's seed, the order of the split or
numpy's generator: each id is ranked by SHA-256 of "<seed>/<id>" and the first round(fraction * N) are labelled
(at least one when fraction > 0). A smaller fraction therefore labels a subset of a larger one with the same seed.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xmkd.data.index import IndexedFrames
from xmkd.errors import XmkdConfigError


@dataclass
class LabelledFrames:
    fraction: float = 1.0  # share of the training frames that keep their labels (1 = all, 0 = none)
    frames: list[str] = field(default_factory=list)  # or exactly these training frame ids (overrides `fraction`)
    seed: int = 0  # which frames a fraction picks; independent of the run's seed


def is_label_scarce(opts: Any) -> bool:
    """Whether `opts` (a `LabelledFrames` config node) removes the labels of any frame."""
    return bool(opts.frames) or float(opts.fraction) < 1.0


def _rank(seed: int, frame_id: str) -> str:
    return hashlib.sha256(f"{seed}/{frame_id}".encode()).hexdigest()


def labelled_ids(ids: Sequence[str], opts: Any, key: str = "model.labelled") -> frozenset[str]:
    """The ids among `ids` (one training split's frame ids) whose labels are kept under `opts`.

    `key` names the config section in errors. Raises XmkdConfigError for a fraction outside [0, 1] or for an
    explicit frame id that is not in `ids`."""
    if opts.frames:
        known = set(ids)
        unknown = [f for f in opts.frames if f not in known]
        if unknown:
            raise XmkdConfigError(f"{key}.frames: {len(unknown)} id(s) not in the training split, e.g. "
                                  f"{unknown[:3]} (the split has {len(ids)} frames, e.g. {list(ids)[:3]})")
        return frozenset(opts.frames)
    fraction = float(opts.fraction)
    if not 0.0 <= fraction <= 1.0:
        raise XmkdConfigError(f"{key}.fraction: {fraction} is not a fraction in [0, 1]")
    if fraction >= 1.0:
        return frozenset(ids)
    count = round(fraction * len(ids))
    if fraction > 0:
        count = max(1, count)
    return frozenset(sorted(ids, key=lambda i: _rank(int(opts.seed), i))[:count])


def describe(opts: Any) -> str:
    """A short human description of the options, for messages ("all frames", "4 listed frames", "1/8, seed 0")."""
    if opts.frames:
        return f"{len(opts.frames)} listed frames"
    return "all frames" if float(opts.fraction) >= 1.0 else f"fraction {float(opts.fraction):g} (seed {opts.seed})"


def labelled_only(frames: IndexedFrames, opts: Any, who: str, key: str = "model.labelled") -> IndexedFrames:
    """`frames` (a training split) reduced to the frames that keep their labels under `opts` (the same object
    when every frame does). For recipes whose every loss needs labels (`lidar_seg`, `camera_seg`): an unlabelled
    frame would only cost time. Raises XmkdConfigError when no frame is left."""
    if not is_label_scarce(opts):
        return frames
    keep = labelled_ids([r["id"] for r in frames.records], opts, key)
    if not keep:
        raise XmkdConfigError(f"{key}: {describe(opts)} leaves no labelled training frame, and {who} trains on "
                              "labels only")
    out = copy.copy(frames)
    out.records = [r for r in frames.records if r["id"] in keep]
    return out


def check_no_paste(opts: Any, paste_database: str, key: str = "model.labelled") -> None:
    """Instance paste and label-scarce training exclude each other: the instance database holds labelled instances
    cut from every training frame, labels that the unlabelled frames must not give away."""
    if paste_database and is_label_scarce(opts):
        raise XmkdConfigError(f"{key} ({describe(opts)}) with model.paste.database={paste_database}: the instance "
                              "database holds the labels of every training frame; turn paste off "
                              "(model.paste.database='') in label-scarce runs")
