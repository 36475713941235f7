import os
import stat

import pytest

from xmkd.config import load_config, save_config
from xmkd.io import atomic_write_text


@pytest.fixture
def umask():
    """Set the process umask for one test, restored after it."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path, umask, mask):
    # mkstemp alone makes every output 0600 whatever the umask (issue 19's tester)
    umask(mask)
    out = atomic_write_text(tmp_path / "sub" / "index.json", "{}")
    with open(tmp_path / "plain.json", "w") as f:
        f.write("{}")
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o666 & ~mask
    assert out.read_text() == "{}" and [p.name for p in out.parent.iterdir()] == ["index.json"]  # no temp left
    run_config = save_config(load_config(None), tmp_path / "run")
    assert stat.S_IMODE(run_config.stat().st_mode) == 0o666 & ~mask


def test_atomic_rewrite_keeps_an_existing_files_mode(tmp_path, umask):
    path = tmp_path / "results.json"
    path.write_text("old")
    path.chmod(0o640)
    umask(0o077)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640
