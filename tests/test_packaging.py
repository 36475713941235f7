"""An installed xmkd (a wheel, not an editable install, with no source tree on the path) carries its configs:
`xmkd config --list` names them and `xmkd config u2mkd/synthetic` resolves one, from any directory.

Nothing is downloaded: the wheel builds without build isolation from this environment's setuptools, installs with
--no-deps --no-index, and the fresh environment reaches this one's dependencies (torch as pinned by
constraints.txt, omegaconf, ...) through a .pth line, added after the install so pip never sees them."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(cmd, cwd=None, env=None):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, xmkd script, environment) of a fresh venv holding xmkd installed from its wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # what the build reads, copied, so its scratch (build/, *.egg-info) stays out of the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "xmkd", src / "xmkd", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         tmp / "dist", src])
    (wheel,) = (tmp / "dist").glob("xmkd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "xmkd/configs/u2mkd/synthetic.yaml" in names and "xmkd/configs/_base/data/synthetic.yaml" in names
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel])
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "xmkd_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return python, venv / "bin" / "xmkd", env


def test_installed_wheel_lists_and_resolves_configs(installed, tmp_path):
    python, xmkd, env = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([python, "-c", "import xmkd, xmkd.config as c; print(xmkd.__file__); print(c.CONFIG_DIR)"],
                cwd=elsewhere, env=env).split()
    assert all(Path(p).is_relative_to(python.parents[1]) for p in where), where  # not the source tree
    listing = run([xmkd, "config", "--list"], cwd=elsewhere, env=env)
    assert "u2mkd/synthetic" in listing and "hsrdn/kitti" in listing and "_base/data/nuscenes" in listing
    config = run([xmkd, "config", "u2mkd/synthetic", "seed=5"], cwd=elsewhere, env=env)
    assert "recipe: u2mkd" in config and "seed: 5" in config and "root: data/synthetic/nuscenes" in config
    assert not list(elsewhere.iterdir())


@pytest.mark.slow  # ~45 s of CPU: the tiny demo trains five small models
def test_installed_wheel_runs_the_demo(installed, tmp_path):
    python, xmkd, env = installed
    out = run([xmkd, "demo", "--budget", "tiny", "--out", "demo"], cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"})
    assert "results: demo/results.json" in out and (tmp_path / "demo" / "report" / "point_miou.png").is_file()
