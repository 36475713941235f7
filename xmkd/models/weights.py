"""Weights from files into modules: safe reading of a torch file, state dicts that fail loudly when they do not
fit the model (every mismatched key named), and one module's weights from an xmkd checkpoint or a plain state dict
(torchvision ImageNet files). The models layer uses it to initialise backbones; `xmkd.engine.checkpoint` builds
training checkpoints on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from xmkd.errors import XmkdError
from xmkd.io import is_architecture_only


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise XmkdError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which
        raise XmkdError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None


def stored_config(path: str | Path) -> str | None:
    """The config (YAML text) an xmkd training checkpoint stores (`Trainer.state()["config"]`); None for a file that
    stores none (an OpenPCDet checkpoint, a plain state dict). Cheap: the archive is memory-mapped and its tensors
    are not read (a file of torch's legacy format, which cannot be mapped, is loaded whole). XmkdError naming the
    file when it is missing or does not load."""
    path = Path(path)
    if not path.is_file():
        raise XmkdError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # not a zip archive: the legacy format, or not a checkpoint (load says which)
        state = load(path)
    text = state.get("config") if isinstance(state, dict) else None
    return text if isinstance(text, str) and text.strip() else None


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, strict: bool = True) -> None:
    """Load a state dict, listing every mismatched key (shape, missing, unexpected; the first few of each and how
    many) in one clear error. Keys a submodule declares in `ignored_checkpoint_keys` (a ResNet's unused ImageNet
    `fc.*`) are dropped when the model lacks them."""
    own = unwrap(model).state_dict()
    ignored = {f"{name}.{k}" if name else k for name, module in unwrap(model).named_modules()
               for k in getattr(module, "ignored_checkpoint_keys", ())}
    state_dict = {k: v for k, v in state_dict.items() if k in own or k not in ignored}
    shape = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in state_dict.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    problems = []
    if shape:
        problems.append(f"shape mismatch of {len(shape)} tensor(s): " + "; ".join(shape[:5])
                        + (f"; ... ({len(shape) - 5} more)" if len(shape) > 5 else ""))
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
