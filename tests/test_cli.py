import subprocess
import sys
from pathlib import Path

import pytest

from xmkd import __version__
from xmkd.cli import main

REPO = Path(__file__).resolve().parents[1]

SUBCOMMANDS = ["synth", "prepare", "prepare-instances", "inspect", "train", "eval", "eval-kitti", "predict", "infer",
               "pseudo-label", "viz", "demo", "summary"]


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "xmkd", "--help"], capture_output=True, text=True, check=True).stdout
    for name in SUBCOMMANDS:
        assert f"    {name}" in out


@pytest.mark.parametrize("name", SUBCOMMANDS + ["config"])
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: xmkd {name}" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"xmkd {__version__}"


def test_config_command_prints_and_reports_errors(tmp_path, capsys):
    assert main(["config", "seed=7"]) == 0
    assert "seed: 7" in capsys.readouterr().out
    assert main(["config", "data.batch_siz=3"]) == 1
    err = capsys.readouterr().err
    assert "data.batch_siz" in err and "Traceback" not in err
    assert main(["config", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "config.yaml").is_file()
    # a recipe's config is validated against that recipe's schema
    assert main(["config", str(REPO / "configs" / "u2mkd" / "nuscenes.yaml"), "model.w_kl=2"]) == 0
    assert "w_kl: 2" in capsys.readouterr().out


def test_config_list_and_names(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in out[1:-1]}
    assert rows["u2mkd/synthetic"] == "u2mkd" and rows["hsrdn/kitti"] == "hsrdn"
    assert rows["_base/data/nuscenes"] == "(section)" and "configs in" in out[-1]
    assert main(["config", "u2mkd/synthetic", "model.w_kl=3"]) == 0
    assert "w_kl: 3" in capsys.readouterr().out
    assert main(["train", "u2mkd/synthtic"]) == 1
    assert "did you mean u2mkd/synthetic" in capsys.readouterr().err
