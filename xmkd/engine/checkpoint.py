"""Training checkpoints: atomic save, restore of a run's nets, which file of a run to use. Reading files and fitting
weights (`load`, `load_weights`, `unwrap`) live in `xmkd.models.weights`."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xmkd.errors import XmkdError
from xmkd.io import atomic_write_bytes
from xmkd.models.weights import load, load_weights, unwrap

__all__ = ["best_or_last", "is_intact", "load", "load_weights", "restore_nets", "save", "unwrap"]


def save(path: str | Path, state: dict[str, Any]) -> Path:
    """torch.save to a temporary file, fsync, rename: a kill at any moment leaves the previous file intact."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def is_intact(path: str | Path) -> bool:
    """Whether `path` is a whole archive written by torch.save: a zip file with its `data.pkl` record whose every
    member matches the CRC-32 stored for it (the whole file is read: about 0.15 s for a 165 MB student checkpoint).
    False for a missing, cut-short or overwritten file, a foreign zip, and damaged bytes in a member or the zip
    directory; bytes of the zip64 end record that zipfile does not read (which torch's reader does) are not checked."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names) and archive.testzip() is None
    except Exception:  # a damaged directory makes zipfile raise many kinds (UnicodeDecodeError,
        return False  # NotImplementedError, RuntimeError 'encrypted', ValueError 'negative seek'): all mean damaged


def restore_nets(nets: dict[str, nn.Module], path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load every named net from an xmkd checkpoint and put it in eval mode; returns the checkpoint."""
    state = load(path, map_location=map_location)
    for name, net in nets.items():
        if name not in state.get("models", {}):
            raise XmkdError(f"{path}: checkpoint has no weights for {name!r} (has {sorted(state.get('models', {}))})")
        load_weights(net, state["models"][name], f"{path} [{name}]")
        net.eval()
    return state


def best_or_last(run_dir: str | Path, order: tuple[str, ...] = ("best.pt", "last.pt")) -> Path:
    """A run directory's first checkpoint of `order` that exists (default: its best, else its last; a recipe's
    `default_checkpoints`). Raises XmkdError naming the folder when it has none of them."""
    folder = Path(run_dir) / "checkpoints"
    for name in order:
        if (folder / name).exists():
            return folder / name
    raise XmkdError(f"{folder}: no {' or '.join(order)}")
