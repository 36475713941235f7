"""Run benchmarks: `python -m benchmarks [NAME ...]` (default: all). Each prints its own table."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "synth": "benchmarks.bench_synth",
    "prepare": "benchmarks.bench_prepare",
    "engine": "benchmarks.bench_engine",
    "kitti_eval": "benchmarks.bench_kitti_eval",
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    for name in names:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
            return 2
        importlib.import_module(BENCHMARKS[name]).main()
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
