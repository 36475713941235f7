from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("XMKD_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real sensor frames not found at {REALDATA} (set XMKD_REALDATA)")
    return REALDATA


def tiny_nuscenes(root: Path, frames: int, frames_per_scene: int, image_size=(64, 36), cameras=("CAM_FRONT",),
                  sweeps: bool = False) -> Path:
    """A small synthetic nuScenes-format dataset with its index, for the tests that train something."""
    from xmkd.data.index import prepare
    from xmkd.data.synthetic.synth import SynthOptions, synthesize

    synthesize(SynthOptions(out=str(root), frames=frames, frames_per_scene=frames_per_scene, image_size=image_size,
                            sweeps=sweeps, cameras=tuple(cameras)), progress=False)
    prepare("nuscenes", root, root / "xmkd_index", progress=False)
    return root
