"""Run benchmarks: `python -m benchmarks [NAME ...]` (default: all but the training ones); each prints a table."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "synth": "benchmarks.bench_synth",
    "prepare": "benchmarks.bench_prepare",
    "engine": "benchmarks.bench_engine",
    "kitti_eval": "benchmarks.bench_kitti_eval",
    "nms": "benchmarks.bench_nms",
    "u2mkd": "benchmarks.bench_u2mkd",
    "hsrdn": "benchmarks.bench_hsrdn",
    "uda": "benchmarks.bench_uda",
}
SLOW = {"u2mkd", "hsrdn", "uda"}  # training benchmarks (hours on 2 cores): run them by name


def main(argv: list[str]) -> int:
    names = argv or [n for n in BENCHMARKS if n not in SLOW]
    if options := [a for a in names if a.startswith("-")]:  # checked before anything runs
        command = (f"{BENCHMARKS[names[0]]} {' '.join(names[1:])}" if names[0] in BENCHMARKS
                   else f"benchmarks.bench_NAME {' '.join(options)}")
        print(f"{' '.join(options)}: options go to a benchmark's own module: python -m {command} (--help lists "
              "them)", file=sys.stderr)
        return 2
    if unknown := [n for n in names if n not in BENCHMARKS]:
        print(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names:
        importlib.import_module(BENCHMARKS[name]).main()
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
