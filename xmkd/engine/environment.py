"""What machine trained a run: one line per start (fresh or resumed, written when its first iteration is done) in
<run>/environment.jsonl; under DDP, rank 0's machine.

Why: on the synthetic benchmarks the same code, config and seed gave results 9 points of xM mIoU apart on two
machines (docs/benchmarks.md, city-a → city-b; whether the CPU's kernels or the regenerated data caused it was not
isolated), so paired comparisons should pair runs of one kind of machine; this file lets anyone check that from a
run folder or an archive (`benchmarks.archive` copies it) instead of from memory.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from xmkd import __version__
from xmkd.engine.logging import read_jsonl


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else `platform.processor()`; "unknown" when neither says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """The facts a run's numbers can depend on: versions, CPU model, the instruction set torch's CPU kernels use
    (`torch.backends.cpu.get_cpu_capability()`, e.g. "AVX512" / "AVX2"), intra-op threads, processes, device."""
    info: dict[str, Any] = {
        "xmkd": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "world_size": world_size, "device": str(device), "platform": sys.platform,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def record(run_dir: Path, step: int, device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """Append `describe(...)` with the iteration the start begins at and the time to run_dir/environment.jsonl
    (one short line, flushed: a start that dies later still leaves it). Returns the record."""
    entry = {"step": step, "time": round(time.time(), 3), **describe(device, world_size)}
    with open(Path(run_dir) / "environment.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    return entry


def read(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of every start of a run, oldest first; [] for a run trained before this file existed."""
    return read_jsonl(Path(run_dir) / "environment.jsonl")
