"""Run logging: `metrics.jsonl` (one JSON object per logged step), TensorBoard events, a summary table."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np


class RunLogger:
    """Writes only where `enabled` (rank 0); other ranks get a no-op logger."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.run_dir = run_dir
        self._jsonl = open(run_dir / "metrics.jsonl", "a") if enabled else None
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is a core dependency; keep training if it is broken
                self._tb = None

    def log(self, step: int, kind: str, values: dict[str, float], **extra: Any) -> None:
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, "time": round(time.time(), 3), **extra,
                  **{k: float(v) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{kind}/{k}", float(v), step)

    def images(self, step: int, images: dict[str, np.ndarray]) -> None:
        if self.enabled and self._tb is not None:
            for name, img in images.items():
                self._tb.add_image(name, np.asarray(img), step, dataformats="HWC")

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a run's append-only log file, one per line, oldest first; [] when the file is missing.
    A line that does not parse (cut by a kill while it was written) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return rows


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def summary_table(rows: dict[str, dict[str, float]], title: str = "") -> str:
    """rows: name -> {metric: value}; a fixed-width table."""
    metrics = sorted({m for r in rows.values() for m in r})
    width = max([len(n) for n in rows] + [8])
    lines = [title] if title else []
    lines.append(f"{'':<{width}}  " + "  ".join(f"{m:>12}" for m in metrics))
    for name, r in rows.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{r.get(m, float('nan')):>12.4f}" for m in metrics))
    return "\n".join(lines)
