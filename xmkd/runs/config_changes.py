"""What a run directory was trained with against what is requested now: the config keys that differ, so that an
interrupted run does not continue, and a finished run is not reused, under other settings than it started with
(a default that changed between versions, an override given differently).

The saved side is `run_config(run_dir)`: the run's config.yaml, with the value it was trained with for a key added
since (`ADDED_KEYS`). Keys in `IGNORED` do not change what a run learns and are not compared; path-valued keys
(`PATH_KEYS`) are compared by what they point at, not by spelling.
"""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xmkd.errors import XmkdError
from xmkd.runs.run_dir import run_config

# Keys that do not change what is trained (weights, optimizer state, random draws, the metric that picks best.pt),
# with why. Not here on purpose: train.val_every (each validation's DataLoader draws its worker base seed from the
# global torch generator that training's dropout and random choices also draw from, so the validation steps shift
# every later draw; torch/utils/data/dataloader.py `_base_seed`), train.best_metric / best_mode (which checkpoint
# becomes best.pt; a resumed run would compare one metric's best with another's) and every model / data / optimizer
# / schedule key.
IGNORED = {
    "name": "the run folder's name (a moved or copied run is the same run)",
    "output_dir": "where the run folder lives (a moved or copied run is the same run)",
    "device": "which processor computes the same steps (auto, cpu, cuda:N)",
    "data.num_workers": "how many processes load the data; each sample and its augmentation come from (seed, epoch, "
                        "index), not from the worker (xmkd/engine/data.py)",
    "data.test_split": "read by neither training nor validation",
    "train.log_every": "how often training losses are logged (no random draw, no state)",
    "train.ckpt_every": "how often last.pt is written (saving reads the random state, it draws nothing)",
    "train.keep_snapshots": "extra copies of checkpoints for `xmkd eval --all`",
}
# train.epochs is not read when train.max_iters > 0 (the Trainer's iteration-based mode): compared only otherwise.
# Groups of keys read only while a switch is on: prefix -> (switch key, its "off" value). While both sides have the
# switch off, the group's other keys are not compared (model.paste.max_added_points went from 4000 to the release's
# 5000 while every synthetic run had pasting off: those runs are the same runs under either value).
INERT_UNLESS = {"model.paste.": ("model.paste.database", "")}  # no database: nothing is pasted (InstancePaste)

# Keys (by their last name) that hold a file or folder: the same when they name the same thing, also as another
# path (relative / absolute, a moved, copied or hard-linked folder): see `same_target`
PATH_KEYS = {"root", "index", "checkpoint", "init_checkpoint", "teacher_checkpoint", "init", "image_pretrained",
             "pretrained_2d", "pseudo_labels", "database"}
# a folder's identity when its path differs: the first of these files it holds (JSON; its "root" names only where
# the folder was when it was written). A dataset root holds its index; an instance / box database its summary.
MANIFESTS = ("xmkd_index/index.json", "index.json", "database.json")


class _Absent:
    """The value of a key that one side's config does not have (another recipe's schema)."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


def _flat(cfg: DictConfig) -> dict[str, Any]:
    """Dotted key -> value (lists as lists) of a resolved config."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def _manifest(folder: Path) -> Any:
    for name in MANIFESTS:
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text())
            return {k: v for k, v in data.items() if k != "root"} if isinstance(data, dict) else data
    return None


def same_target(a: str, b: str) -> bool:
    """Whether two path values name the same file or folder: equal as written or resolved (relative paths from the
    working directory, as training reads them), one file under two names (hard links), two files of equal bytes, or
    two folders holding equal manifests (`MANIFESTS`: a dataset's index, a database's summary; compared without the
    "root" they record). A path that does not exist is only the same as itself. Never raises for a missing or
    unreadable path (then: not the same)."""
    if a == b:
        return True
    if not a or not b:
        return False
    pa, pb = Path(a), Path(b)
    try:
        if pa.resolve() == pb.resolve():
            return True
        if not (pa.exists() and pb.exists()):
            return False
        if os.path.samefile(pa, pb):
            return True
        if pa.is_file() and pb.is_file():
            return filecmp.cmp(pa, pb, shallow=False)  # sizes first, then the bytes
        if pa.is_dir() and pb.is_dir():
            ma = _manifest(pa)
            return ma is not None and ma == _manifest(pb)
    except (OSError, ValueError):  # unreadable, or a manifest that is not JSON: cannot tell, so not the same
        return False
    return False


def config_changes(run_dir: str | Path, cfg: DictConfig, ignore: dict[str, str] | None = None
                   ) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, requested value) of every key whose value in the run directory's saved config
    (`run_config`, with `ADDED_KEYS` applied) differs from the resolved config `cfg`, sorted by key; a key that only
    one side has shows `ABSENT` on the other (another recipe). Not listed: keys of `ignore` (default `IGNORED`; {}
    lists them too), train.epochs while both sides train by iterations (max_iters > 0), a group of `INERT_UNLESS`
    while its switch is off on both sides, two values the run's recipe treats alike (`Recipe.same_values`), and
    path keys (`PATH_KEYS`) that name the same thing (`same_target`).

    Raises XmkdError when `run_dir` has no config.yaml, XmkdConfigError when it does not load (`run_config`)."""
    ignore = IGNORED if ignore is None else ignore
    recipe_cls, saved_cfg = run_config(run_dir)
    saved, wanted = _flat(saved_cfg), _flat(cfg)
    if saved.get("train.max_iters", 0) > 0 and wanted.get("train.max_iters", 0) > 0:
        ignore = {**ignore, "train.epochs": "not read when training by iterations"}
    off = [prefix for prefix, (switch, value) in INERT_UNLESS.items()
           if saved.get(switch, value) == value and wanted.get(switch, value) == value]
    changes = []
    for key in sorted(saved.keys() | wanted.keys()):
        a, b = saved.get(key, ABSENT), wanted.get(key, ABSENT)
        if key in ignore or a == b or any(key.startswith(p) and key != INERT_UNLESS[p][0] for p in off):
            continue
        if any(a in group and b in group for group in recipe_cls.same_values.get(key, [])):
            continue
        if key.rsplit(".", 1)[-1] in PATH_KEYS and isinstance(a, str) and isinstance(b, str) and same_target(a, b):
            continue
        changes.append((key, a, b))
    return changes


def describe(changes: list[tuple[str, Any, Any]]) -> str:
    """One line per change: `  key: saved X, requested Y`."""
    notes = {"train.max_iters": " (an annealed schedule cannot be stretched)"}
    return "\n".join(f"  {k}: saved {a!r}, requested {b!r}{notes.get(k, '')}" for k, a, b in changes)


def require_same_config(run_dir: str | Path, cfg: DictConfig, escape: str = "") -> None:
    """Raise XmkdError when the run in `run_dir` was trained with another config than `cfg` (`config_changes`),
    naming the folder and each key with both values, and what to do: delete the folder, train into another, pass
    the saved values as overrides, or `escape` (e.g. a command-line flag that allows the change) when given."""
    changes = config_changes(run_dir, cfg)
    if not changes:
        return
    keep = " ".join(f"{k}={_override(a)}" for k, a, _ in changes if a is not ABSENT)
    keep = f", or pass the saved value(s) as overrides ({keep})" if keep else ""
    also = f", or {escape}" if escape else ""
    raise XmkdError(f"{run_dir}: holds a run trained with another config than the one requested:\n"
                    f"{describe(changes)}\n"
                    f"delete {run_dir} to train it again, train into another folder (output_dir=... / name=...)"
                    f"{keep}{also}")


def _override(value: Any) -> str:
    """A value as a command-line override spells it."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(_override(v) for v in value) + "]"
    return str(value)
