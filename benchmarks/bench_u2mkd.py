"""U2MKD on the synthetic world at the benchmark budget, 3 seeds: mean +- std of every row of the demo table.

    python -m benchmarks u2mkd            # about an hour on 2 cores; resumable (finished runs are reused)

Per seed: `xmkd demo --budget bench --seed S` (its own 40-keyframe dataset, a cr 0.5 teacher with 2 sweeps for
240 steps, cr 0.25 students for 120 steps, plus two KD ablations: KL only, feature imitation only). Outputs in
outputs/bench_u2mkd/seed<S>/; the aggregated table is printed and written to outputs/bench_u2mkd/table.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from xmkd.demo import run_demo
from xmkd.io import atomic_write_text

OUT = Path(os.environ.get("XMKD_BENCH_OUT", "outputs/bench_u2mkd"))
COLUMNS = ("point_miou", "pixel_miou", "point_miou_drop2")


def aggregate(per_seed: list[dict]) -> str:
    rows = list(per_seed[0]["rows"])
    lines = ["| row | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for col in COLUMNS:
            values = [r["rows"][row][col] for r in per_seed if col in r["rows"][row]]
            cells.append(f"{np.mean(values):.2f} ± {np.std(values):.2f}" if values else "-")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    kd = [r["rows"]["student_kd"]["point_miou"] - r["rows"]["student_nokd"]["point_miou"] for r in per_seed]
    lines.append("")
    lines.append(f"KD - no-KD point mIoU per seed: {', '.join(f'{d:+.2f}' for d in kd)} "
                 f"(mean {np.mean(kd):+.2f}); seconds per seed: "
                 f"{', '.join(str(round(r['seconds'])) for r in per_seed)}")
    return "\n".join(lines)


def main(seeds: tuple[int, ...] = (0, 1, 2)) -> None:
    per_seed = []
    for seed in seeds:
        folder = OUT / f"seed{seed}"
        done = folder / "results.json"
        per_seed.append(json.loads(done.read_text()) if done.exists() and
                        json.loads(done.read_text()).get("budget") == "bench" else run_demo(folder, seed, "bench"))
    table = aggregate(per_seed)
    atomic_write_text(OUT / "table.md", table + "\n")
    print(f"U2MKD synthetic benchmark ({len(seeds)} seeds, mean ± std, %)")
    print(table)
