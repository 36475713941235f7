"""Synthetic world speed: keyframes per second for a 32-beam LiDAR + one 640x360 camera, files written.

    python -m benchmarks synth            (or: make bench)

Measures `xmkd synth --format nuscenes --cameras CAM_FRONT --no-sweeps` end to end (scene generation,
ray casting, shading, JPEG/binary writing, tables), with 1 and 2 worker processes. Target: >= 5 frames/s
on the 2-core reference machine.
"""

from __future__ import annotations

import os
import tempfile
import time

from xmkd.data.synthetic.synth import SynthOptions, synthesize


def run(frames: int = 40) -> list[dict]:
    rows = []
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            opts = SynthOptions(out=os.path.join(tmp, "ds"), preset="day", format="nuscenes", frames=frames,
                                frames_per_scene=5, image_size=(640, 360), cameras=("CAM_FRONT",), sweeps=False,
                                workers=workers)
            start = time.perf_counter()
            synthesize(opts, progress=False)
            seconds = time.perf_counter() - start
        rows.append({"workers": workers, "frames": frames, "seconds": seconds, "frames_per_s": frames / seconds})
    return rows


def main() -> None:
    rows = run()
    print("synthetic world: 32-beam LiDAR + 1 camera 640x360, nuScenes files written")
    print(f"{'workers':>8} {'frames':>7} {'seconds':>8} {'frames/s':>9}")
    for r in rows:
        print(f"{r['workers']:>8} {r['frames']:>7} {r['seconds']:>8.2f} {r['frames_per_s']:>9.2f}")


if __name__ == "__main__":
    main()
