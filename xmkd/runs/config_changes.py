"""What a run directory was trained with against what is requested now: the config keys that differ, so that an
interrupted run does not continue, and a finished run is not reused, under other settings than it started with
(a default that changed between versions, an override given differently).

The saved side is `saved_config(run_dir)`: the run's config.yaml (`run_config`, with the value it was trained with
for a key added since, `ADDED_KEYS`), else the config its last checkpoint stores. Keys in `IGNORED` do not change
what a run learns and are not compared; path-valued keys (`PATH_KEYS`) are compared by what they point at, not by
spelling, as seen from the current directory. `resume_check` is the gate of `xmkd train --resume` and
`xmkd.runs.train.train_or_reuse`; keys in `FIXED` cannot change on resume at all.
"""

from __future__ import annotations

import filecmp
import json
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xmkd.engine.recipe import Recipe
from xmkd.errors import XmkdError
from xmkd.runs.run_dir import config_file, run_config

# Keys that do not change what is trained (weights, optimizer state, random draws, the metric that picks best.pt),
# with why. Not here on purpose: train.val_every (each validation's DataLoader draws its worker base seed from the
# global torch generator that training's dropout and random choices also draw from, so the validation steps shift
# every later draw; torch/utils/data/dataloader.py `_base_seed`), train.best_metric / best_mode (which checkpoint
# becomes best.pt; a resumed run would compare one metric's best with another's) and every model / data / optimizer
# / schedule key.
IGNORED = {
    "name": "the run folder's name (a moved or copied run is the same run)",
    "output_dir": "where the run folder lives (a moved or copied run is the same run)",
    "device": "which processor computes the same steps (auto, cpu, cuda:N); compared while train.amp is on (AMP "
              "acts on CUDA only, so the device decides whether a step runs in float16)",
    "data.num_workers": "how many processes load the data; each sample and its augmentation come from (seed, epoch, "
                        "index), not from the worker (xmkd/engine/data.py)",
    "data.test_split": "read by neither training nor validation",
    "train.log_every": "how often training losses are logged (no random draw, no state)",
    "train.ckpt_every": "how often last.pt is written (saving reads the random state, it draws nothing)",
    "train.keep_snapshots": "extra copies of checkpoints for `xmkd eval --all`",
}
# Keys whose value a resumed run takes from its last checkpoint, not from the config (the optimizers' and LR
# schedules' state_dicts hold lr, weight_decay, betas, eps, momentum, base_lrs; the step count is the position on
# the schedule): a change would not be applied while config.yaml recorded it, so it is refused even with
# --allow-config-change. Architecture keys are not listed: the weights would not load (an error naming each tensor).
FIXED = {"recipe": "another recipe trains other nets",
         "train.optimizer": "the optimizer's state in last.pt holds its settings (lr, weight_decay, betas, eps, "
                            "momentum), which resuming restores",
         "train.schedule": "the schedule's state in last.pt (base_lrs, its step) is restored, and a curve cannot "
                           "change midway",
         "train.max_iters": "the run's length fixes its schedule (an annealed schedule cannot be stretched)",
         "train.epochs": "the run's length fixes its schedule (an annealed schedule cannot be stretched)"}
# train.epochs is not read when train.max_iters > 0 (the Trainer's iteration-based mode): compared only otherwise.
# Groups of keys read only while a switch is on: key prefix (or a tuple of them) -> its switches, (key, "off" value)
# pairs. While every switch of a group is off on both sides, the group's other keys are not compared
# (model.paste.max_added_points went from 4000 to the release's 5000 while every synthetic run had pasting off: those
# runs are the same runs under either value; a CMKD run, whose relation weights are 0, trains alike under any relation
# setting).
INERT_UNLESS = {"model.paste.": (("model.paste.database", ""),),  # no database: nothing is pasted (InstancePaste)
                ("model.relation_", "model.max_nodes"):  # hsrdn / cmkd
                    (("model.weights.distance", 0.0), ("model.weights.angle", 0.0))}

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


def checkpoint_config(last: str | Path) -> str:
    """The config a training checkpoint stores (`Trainer.state()["config"]`, YAML text). Cheap: the archive is
    memory-mapped, its tensors are not read. XmkdError naming the file when it does not load or stores none."""
    from xmkd.models.weights import stored_config  # here: reading a run's config.yaml needs no torch

    text = stored_config(last)
    if text is None:
        raise XmkdError(f"{last}: the checkpoint stores no config")
    return text


def saved_config(run_dir: str | Path) -> tuple[type[Recipe], DictConfig, str]:
    """(recipe, config, where it was read) of the run in `run_dir`: its config.yaml (`run_config`, with
    `ADDED_KEYS`), else, when only checkpoints/last.pt is there, the config that checkpoint stores. Raises
    `UnreadableConfig` (naming the file and the error) when the one that is there does not load, XmkdError when
    neither is there."""
    run_dir = Path(run_dir)
    yaml_file, last = run_dir / "config.yaml", run_dir / "checkpoints" / "last.pt"
    if yaml_file.is_file():
        try:
            return (*run_config(run_dir), str(yaml_file))
        except XmkdError as err:
            raise UnreadableConfig(str(yaml_file), err) from None
    if not last.is_file():
        raise XmkdError(f"{run_dir}: holds no config.yaml and no checkpoints/last.pt")
    where = f"{last} (the config it stores; {yaml_file} is missing)"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            (Path(tmp) / "config.yaml").write_text(checkpoint_config(last))
            recipe_cls, cfg = config_file(Path(tmp) / "config.yaml")
        except XmkdError as err:
            raise UnreadableConfig(where, XmkdError(str(err).replace(str(Path(tmp) / "config.yaml"), str(last)))
                                   ) from None
    return recipe_cls, cfg, where


class UnreadableConfig(XmkdError):
    """A run's saved config (config.yaml, or the one its last checkpoint stores) that does not load: written by
    another version (a key since removed or renamed), damaged, empty."""

    def __init__(self, where: str, err: Exception):
        super().__init__(f"{where}: the run's saved config cannot be read ({err})")
        self.where, self.err = where, err


def config_changes(run_dir: str | Path, cfg: DictConfig, ignore: dict[str, str] | None = None,
                   saved: tuple[type[Recipe], DictConfig, str] | None = None) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, requested value) of every key whose value in the run directory's saved config
    (`saved_config`, or `saved` when given) differs from the resolved config `cfg`, sorted by key; a key that only
    one side has shows `ABSENT` on the other. Runs of two recipes differ in `recipe` only (their schemas differ
    in everything). Not listed: keys of `ignore` (default `IGNORED`; {} lists them too; `device` is compared while
    train.amp is on, see `IGNORED`), train.epochs while both sides train by iterations (max_iters > 0), a group of
    `INERT_UNLESS` while its switches are off on both sides, two values the run's recipe treats alike
    (`Recipe.same_values`), and path keys (`PATH_KEYS`) that name the same thing (`same_target`).

    Raises what `saved_config` raises."""
    ignore = IGNORED if ignore is None else ignore
    recipe_cls, saved_cfg, _ = saved if saved is not None else saved_config(run_dir)
    if saved_cfg.get("recipe") != cfg.get("recipe"):
        return [("recipe", saved_cfg.get("recipe"), cfg.get("recipe"))]
    saved, wanted = _flat(saved_cfg), _flat(cfg)
    if saved.get("train.max_iters", 0) > 0 and wanted.get("train.max_iters", 0) > 0:
        ignore = {**ignore, "train.epochs": "not read when training by iterations"}
    if saved.get("train.amp") or wanted.get("train.amp"):  # AMP acts on CUDA only: the device changes the numbers
        ignore = {k: v for k, v in ignore.items() if k != "device"}
    off = [prefix for prefix, switches in INERT_UNLESS.items()
           if all(saved.get(k, v) == v and wanted.get(k, v) == v for k, v in switches)]
    changes = []
    for key in sorted(saved.keys() | wanted.keys()):
        a, b = saved.get(key, ABSENT), wanted.get(key, ABSENT)
        if key in ignore or a == b or any(key.startswith(p) and key not in dict(INERT_UNLESS[p]) for p in off):
            continue
        if any(a in group and b in group for group in recipe_cls.same_values.get(key, [])):
            continue
        if _is_path(key, a, b) and same_target(a, b):
            continue
        changes.append((key, a, b))
    return changes


def _is_path(key: str, a: Any, b: Any) -> bool:
    return key.rsplit(".", 1)[-1] in PATH_KEYS and isinstance(a, str) and isinstance(b, str)


def _gone(key: str, a: Any, b: Any) -> bool:
    """A path key whose saved value names nothing from here (moved, renamed, or relative to another directory)."""
    return _is_path(key, a, b) and bool(a) and not Path(a).exists()


def fixed(key: str) -> str:
    """Why `key` cannot change when a run resumes, even with --allow-config-change ("" when it can)."""
    return next((why for prefix, why in FIXED.items() if key == prefix or key.startswith(f"{prefix}.")), "")


def describe(changes: list[tuple[str, Any, Any]]) -> str:
    """One line per change: `  key: saved X, requested Y`, with a note where one helps."""
    notes = {"train.max_iters": " (an annealed schedule cannot be stretched)",
             "device": " (AMP acts on CUDA only: with train.amp on, the device decides whether steps run in float16)"}

    def note(k: str, a: Any, b: Any) -> str:
        if _gone(k, a, b):
            return (" (the saved path does not exist from here, relative paths being read from the current "
                    "directory: a moved dataset or file cannot be compared)")
        return notes.get(k, "")
    return "\n".join(f"  {k}: saved {a!r}, requested {b!r}{note(k, a, b)}" for k, a, b in changes)


def resume_check(run_dir: str | Path, cfg: DictConfig, allow: bool = False, flag: str = "") -> str:
    """Whether the run in `run_dir` (its config.yaml, else the config its last.pt stores: `saved_config`) may go
    on under `cfg`: raises XmkdError when it was trained with another recipe, when it differs on a key that changes
    what is trained (`config_changes`), or when its saved config cannot be read (`UnreadableConfig`), naming the
    file, each key with both values, and what to do. `allow` (the `flag`, e.g. `--allow-config-change`) lets the
    changes and an unreadable saved config through, except the keys whose value the resumed state holds (`FIXED`).
    Returns what to tell the user when it goes ahead ("" when nothing): every difference, ignored keys included, or
    that the saved config could not be read."""
    run_dir = Path(run_dir)
    escape = f", or pass {flag} to resume with the requested values" if flag else ""
    try:
        saved = saved_config(run_dir)
    except UnreadableConfig as err:
        if allow:
            return (f"{err}; resuming without comparing the configs ({flag}); the optimizer and schedule settings "
                    "and the run's length come from last.pt's state, whatever the config requests")
        raise XmkdError(f"{err}: cannot tell whether it was trained with the requested config; delete {run_dir} "
                        f"to train it again, or train into another folder (output_dir=... / name=...){escape}"
                        ) from None
    changes = config_changes(run_dir, cfg, saved=saved)
    if changes and changes[0][0] == "recipe":
        raise XmkdError(f"{run_dir}: holds a run of recipe {changes[0][1]!r}, not {changes[0][2]!r} (read from "
                        f"{saved[2]}): delete it or train into another folder (output_dir=... / name=...)")
    stuck = [c for c in changes if fixed(c[0])]
    if changes and (not allow or stuck):
        keep = " ".join(shlex.quote(f"{k}={_override(a)}") for k, a, b in changes
                        if a is not ABSENT and not _gone(k, a, b))
        keep = f", or pass the saved value(s) as overrides ({keep})" if keep else ""
        why = sorted({fixed(k) for k, _, _ in stuck})
        also = (f"; {', '.join(k for k, _, _ in stuck)} cannot change on resume, even with {flag}: "
                f"{'; '.join(why)}") if stuck and flag else escape
        raise XmkdError(f"{run_dir}: holds a run trained with another config than the one requested (saved: "
                        f"{saved[2]}):\n{describe(changes)}\n"
                        f"delete {run_dir} to train it again, train into another folder (output_dir=... / name=...)"
                        f"{keep}{also}")
    shown = config_changes(run_dir, cfg, ignore={}, saved=saved)
    if not shown:
        return ""
    return (f"resuming {run_dir} with a config that differs from its saved one ({saved[2]}; it will hold the "
            f"requested values from the first checkpoint on):\n{describe(shown)}")


def _override(value: Any) -> str:
    """A value as a command-line override spells it (before shell quoting)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(_override(v) for v in value) + "]"
    return str(value)
