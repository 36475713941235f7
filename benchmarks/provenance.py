"""Record what a benchmark seed trained on: a SHA-256 over each synthetic dataset's files (rendered images, point
clouds, annotations, the generator's marker; not `xmkd_index` or `xmkd_gt_database`, which are derived from them
and hold absolute paths) in <seed folder>/data_digest.json, beside `runs`, where `benchmarks.archive` keeps it.

Why: the same code, config and seed gave numbers several points apart on two machines, and whether the rendered
data differed could not be told afterwards (docs/benchmarks.md, city-a → city-b). Two digests answer that; each
run's environment.jsonl names the machine that trained it. One record per seed folder, rewritten each time the
benchmark (or this command) runs there: a seed spread over machines keeps the last machine's digest.

    python -m benchmarks.provenance outputs/bench_uda/rig/seed1 rig-a rig-b   # a seed written before this existed
    python -m benchmarks.provenance outputs/bench_hsrdn/seed0 kitti
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from xmkd.io import atomic_write_text

DERIVED = ("xmkd_index", "xmkd_gt_database")
FILE = "data_digest.json"


def digest(root: Path) -> dict[str, Any]:
    """{"sha256", "files", "bytes"} of the files under `root` except the DERIVED folders: each file's relative path
    (POSIX), its size and its bytes, in sorted path order. FileNotFoundError when `root` is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    h, count, size = hashlib.sha256(), 0, 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel.parts[0] in DERIVED:
            continue
        n = path.stat().st_size
        h.update(rel.as_posix().encode() + b"\0" + str(n).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        count, size = count + 1, size + n
    return {"sha256": h.hexdigest(), "files": count, "bytes": size}


def record(folder: Path, datasets: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Write {name: digest(path)} for `datasets` to folder/data_digest.json (atomically; replacing an earlier
    record) and return it."""
    digests = {name: digest(path) for name, path in datasets.items()}
    atomic_write_text(Path(folder) / FILE, json.dumps(digests, indent=1, sort_keys=True) + "\n")
    return digests


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a benchmark seed's folder (holds `runs` and the datasets)")
    parser.add_argument("datasets", nargs="+", help="dataset folders directly inside it (e.g. rig-a rig-b, or kitti)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        raise SystemExit(f"{args.folder}: not a folder (a benchmark seed's folder, e.g. outputs/bench_uda/rig/seed1)")
    names = [Path(n).name for n in args.datasets]
    outside = [n for n, name in zip(args.datasets, names) if name in ("", ".", "..") or Path(n) != Path(name)]
    if outside:  # the record's keys are the folder names, and the record must not land inside a dataset
        raise SystemExit(f"{', '.join(outside)}: name a dataset folder directly inside {args.folder} (e.g. rig-a)")
    try:
        digests = record(args.folder, {name: args.folder / name for name in names})
    except OSError as err:
        raise SystemExit(str(err)) from None
    for name, d in digests.items():
        print(f"{name}: {d['sha256'][:16]}… ({d['files']} files, {d['bytes'] / 1e6:.1f} MB)")
    print(f"-> {args.folder / FILE}")


if __name__ == "__main__":
    main()
