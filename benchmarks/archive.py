"""Keep a training benchmark's measured numbers in the repository: copy the small files its tables are built from
(each run's metrics.jsonl and config.yaml, its environment.jsonl: the machine of each start, the per-seed *.json
files, table.md) out of an output folder, leaving checkpoints, datasets and predictions behind. The copy is itself
an output folder: point the benchmark's table command at it, e.g.

    python -m benchmarks.archive outputs/bench_uda benchmarks/results/uda_<commit>
    XMKD_BENCH_OUT=benchmarks/results/uda_<commit> python -m benchmarks.bench_uda --scenario city --table
    XMKD_BENCH_OUT=benchmarks/results/hsrdn_<commit> python -m benchmarks.bench_hsrdn --report

Why: output folders are hours of CPU and gigabytes of checkpoints; the tables in docs/benchmarks.md should be
re-printable from what the repository holds, and a benchmark spread over several machines or days can add seeds to
the same archive. ARCHIVE.md in the copy names the source folder, the commit and the date (append with --note).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
from pathlib import Path

RUN_FILES = ("metrics.jsonl", "config.yaml", "environment.jsonl")  # in <...>/runs/<run>/


def table_files(src: Path) -> list[Path]:
    """The files under `src` a benchmark's table reads: RUN_FILES of every run folder (a folder inside a folder
    named `runs`), the *.json files beside each `runs` folder, and *.md files at the top. Relative paths, sorted."""
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder (a benchmark output folder, e.g. outputs/bench_uda)")
    files = {p for name in RUN_FILES for p in src.rglob(name) if p.parent.parent.name == "runs"}
    for runs in src.rglob("runs"):
        if runs.is_dir():
            files.update(p for p in runs.parent.glob("*.json") if p.is_file())
    files.update(p for p in src.glob("*.md") if p.is_file())
    return sorted(p.relative_to(src) for p in files)


def archive(src: Path, dst: Path, note: str = "") -> list[Path]:
    """Copy `table_files(src)` to the same relative paths under `dst` (files already there are replaced: an
    archive grows seed by seed) and append a line to dst/ARCHIVE.md. Returns the copied relative paths."""
    files = table_files(src)
    if not files:
        raise FileNotFoundError(f"{src}: no run folder with {' or '.join(RUN_FILES)} (nothing to archive)")
    for rel in files:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    day = datetime.date.today().isoformat()
    with open(dst / "ARCHIVE.md", "a", encoding="utf-8") as f:
        f.write(f"- {day}: {len(files)} files from `{src}` (checkout at {commit}){': ' + note if note else ''}\n")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="a benchmark's output folder")
    parser.add_argument("dst", type=Path, help="the archive folder (created; files already there are replaced)")
    parser.add_argument("--note", default="", help="a line for ARCHIVE.md: which code trained the runs, the load")
    args = parser.parse_args()
    try:
        files = archive(args.src, args.dst, args.note)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    size = sum((args.dst / f).stat().st_size for f in files)
    print(f"{len(files)} files ({size / 1e6:.2f} MB) -> {args.dst}")


if __name__ == "__main__":
    main()
