"""`xmkd prepare` + `xmkd inspect` on a synthetic nuScenes set of 100 keyframes: time and peak memory.

    python -m benchmarks prepare

The dataset (6 cameras at 320x180, 9 sweeps per keyframe) is rendered first and not timed. `prepare` and
`inspect` each run as their own process (the way a user runs them); peak RSS is that process's maximum
resident set size. Goal: both in under a minute, with memory bounded (not growing with the sweeps' size).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from xmkd.data.synthetic.synth import SynthOptions, synthesize

# Runs the CLI and reports its own peak resident set size (kB on Linux) as the last line on stderr.
_WRAPPER = ("import resource, sys; from xmkd.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def _run(args: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *args], check=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    return seconds, int(proc.stderr.strip().splitlines()[-1]) / 1024


def main(frames: int = 100) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "nuscenes")
        start = time.perf_counter()
        synthesize(SynthOptions(out=root, frames=frames, frames_per_scene=10, image_size=(320, 180), workers=2),
                   progress=False)
        synth_s = time.perf_counter() - start
        prep_s, prep_mb = _run(["prepare", "nuscenes", "--root", root, "--out", os.path.join(root, "xmkd_index"),
                                "--quiet"])
        insp_s, insp_mb = _run(["inspect", "nuscenes", "--root", root, "--json"])
    print(f"prepare + inspect, synthetic nuScenes, {frames} keyframes (rendering them took {synth_s:.0f} s)")
    print(f"{'step':<10} {'seconds':>8} {'peak RSS MB':>12}")
    print(f"{'prepare':<10} {prep_s:>8.1f} {prep_mb:>12.0f}")
    print(f"{'inspect':<10} {insp_s:>8.1f} {insp_mb:>12.0f}")


if __name__ == "__main__":
    main()
