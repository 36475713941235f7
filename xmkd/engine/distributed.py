"""torch.distributed under torchrun: process-group set-up from the environment, rank helpers, reductions.

`torchrun --nproc_per_node=N -m xmkd train ...` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; without
them everything runs as a single process. gloo on CPU, NCCL on CUDA. No home-made process spawning.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import torch
import torch.distributed as dist


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device_pref: str = "auto") -> torch.device:
    """Initialise the process group if launched by torchrun and pick this process's device."""
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    if device_pref.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device_pref!r} requested but CUDA is not available")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if env_world_size() > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        index = local_rank if device_pref in ("auto", "cuda") else int(device_pref.split(":")[1])
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def finish(wait: bool = True) -> None:
    """End this process's part of a torchrun job (nothing when not distributed): collect the garbage that still
    holds the process group (DistributedDataParallel wrappers caught in reference cycles), meet the other processes
    at a barrier when `wait` (after a command that ended normally; after a failure the others may never arrive),
    then destroy the group while the interpreter is whole.

    Why: a gloo process group that is still alive when Python finalises is torn down with its threads unjoined and
    the process aborts (`terminate called without an active exception`, SIGABRT, exit -6) after its work is done;
    this happened to rank 1 in 2 of 37 two-process `xmkd train` runs on CPU that destroyed the group without these
    steps, and in none of 100 with them (torch 2.13, gloo; tests/test_engine.py's DDP run, in a loop)."""
    if not is_distributed():
        return
    gc.collect()
    try:
        if wait:
            dist.barrier()
    finally:  # a barrier that fails (another process died) still leaves the group destroyed
        dist.destroy_process_group()
        gc.collect()


def _reduce_device() -> torch.device:
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Mean of scalar values over processes (identity when not distributed)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t)
    t /= world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}



def all_gather_object(value: Any) -> list[Any]:
    """Every process's `value` (picklable), in rank order; `[value]` when not distributed."""
    if not is_distributed():
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out
