"""Checkpoints: atomic save, safe load, and weights that fail loudly when they do not fit the model."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xmkd.errors import XmkdError
from xmkd.io import atomic_write_bytes, is_architecture_only


def save(path: str | Path, state: dict[str, Any]) -> Path:
    """torch.save to a temporary file, fsync, rename: a kill at any moment leaves the previous file intact."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise XmkdError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which
        raise XmkdError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, strict: bool = True) -> None:
    """Load a state dict, listing every mismatched key (shape, missing, unexpected) in one clear error."""
    own = unwrap(model).state_dict()
    shape = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in state_dict.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    problems = []
    if shape:
        problems.append("shape mismatch: " + "; ".join(shape))
    if strict and missing:
        problems.append(f"missing in checkpoint: {', '.join(missing[:20])}" + (" ..." if len(missing) > 20 else ""))
    if strict and unexpected:
        problems.append(f"not in model: {', '.join(unexpected[:20])}" + (" ..." if len(unexpected) > 20 else ""))
    if problems:
        raise XmkdError(f"{source}: weights do not fit {type(unwrap(model)).__name__}: " + " | ".join(problems))
    unwrap(model).load_state_dict(state_dict, strict=strict)


def load_module_from_file(model: nn.Module, path: str | Path, key: str | None = None, strict: bool = True) -> None:
    """Weights for one module from a file: an xmkd checkpoint (`key` names the module in its `models`) or a
    plain state dict (e.g. a torchvision ImageNet file). Under `xmkd.io.architecture_only()` nothing is read."""
    if is_architecture_only():
        return
    state = load(path)
    if "models" in state:
        if key is None or key not in state["models"]:
            raise XmkdError(f"{path}: checkpoint holds {sorted(state['models'])}, not {key!r}")
        state = state["models"][key]
    elif "state_dict" in state:
        state = state["state_dict"]
    load_weights(model, state, str(path), strict)


def restore_nets(nets: dict[str, nn.Module], path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load every named net from an xmkd checkpoint and put it in eval mode; returns the checkpoint."""
    state = load(path, map_location=map_location)
    for name, net in nets.items():
        if name not in state.get("models", {}):
            raise XmkdError(f"{path}: checkpoint has no weights for {name!r} (has {sorted(state.get('models', {}))})")
        load_weights(net, state["models"][name], f"{path} [{name}]")
        net.eval()
    return state
