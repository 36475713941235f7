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
    rows = {line.split()[0]: line.split()[1] for line in out[1:-1] if not line.startswith(" ")}  # + wrapped lines
    assert rows["u2mkd/synthetic"] == "u2mkd" and rows["hsrdn/kitti"] == "hsrdn"
    assert rows["_base/data/nuscenes"] == "(section)" and "configs in" in out[-1]
    assert main(["config", "u2mkd/synthetic", "model.w_kl=3"]) == 0
    assert "w_kl: 3" in capsys.readouterr().out
    assert main(["train", "u2mkd/synthtic"]) == 1
    assert "did you mean u2mkd/synthetic" in capsys.readouterr().err


# Each command with the least it parses; its output option is added by the test.
MINIMAL_ARGS = {"synth": [], "prepare": ["nuscenes", "--root", "R"], "prepare-instances": ["--index", "R", "--split",
                "train"], "eval": ["R"], "predict": ["R", "--split", "val"], "infer": ["R", "--split", "val"],
                "eval-kitti": ["--gt", "R", "--pred", "R"], "pseudo-label": ["R", "--split", "val"],
                "viz": ["synthetic"], "demo": [], "config": []}


def output_options():
    """(command, option, is a file) for every output option of every command (`outputs` in its defaults)."""
    from xmkd.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    found = []
    for name, parser in sub.choices.items():
        outputs = parser._defaults.get("outputs", {})
        writes = {a.dest for a in parser._actions if a.dest in ("out", "json") and a.nargs != 0}  # not flags
        assert writes == set(outputs), f"{name}: output options {writes} vs checked {set(outputs)}"
        found += [(name, option, kind == "file") for option, (_, kind) in outputs.items()]
    return found


@pytest.mark.parametrize(("command", "option", "is_file"), output_options())
def test_every_output_path_is_checked_before_the_work(command, option, is_file, tmp_path, capsys):
    a_file, a_folder = tmp_path / "taken.txt", tmp_path / "folder"
    a_file.write_text("x")
    a_folder.mkdir()
    base = ["--" + option.replace("_", "-")]
    wrong = a_folder if is_file else a_file
    expected = "is a folder; expected a file path" if is_file else "exists and is not a folder"
    for path, message in ((wrong, expected), (a_file / "below", f"{a_file} is a file, not a folder")):
        assert main([command, *[str(tmp_path) if a == "R" else a for a in MINIMAL_ARGS[command]], *base,
                     str(path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"xmkd {command}: error: {path}: ") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "taken.txt"]  # nothing was created


def test_an_unwritable_place_is_refused(tmp_path, capsys):
    if not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    assert main(["viz", "synthetic", "--out", "/proc/v"]) == 1
    assert "xmkd viz: error: /proc/v: cannot write the pictures there: /proc:" in capsys.readouterr().err


def test_config_list_whole_sentences_and_folders(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["config", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in out[:-1]) <= 100
    start = next(i for i, line in enumerate(out) if line.startswith("cmkd/kitti "))
    rest = [line.strip() for line in out[start + 1:] if line.startswith(" ")][: 3]
    text = " ".join([out[start].split(None, 2)[2], *rest])
    assert text.startswith("CMKD on KITTI at the published scale, stage 2: configs/hsrdn/kitti.yaml without the "
                           "relation losses.")
    assert main(["config", "u2mkd"]) == 1
    err = capsys.readouterr().err
    assert "'u2mkd' is a folder of shipped configs, not a config; name one of them: u2mkd/nuscenes, " \
        "u2mkd/semantickitti, u2mkd/synthetic, u2mkd/waymo" in err


def test_a_failed_start_leaves_no_run_directory(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "u2mkd/synthetic", f"output_dir={runs}", "name=x",
                 f"model.teacher.checkpoint={tmp_path / 'missing.pt'}", "--quiet"]) == 1
    assert "missing.pt: checkpoint not found" in capsys.readouterr().err
    assert not runs.exists()


def test_a_closed_stdout_pipe_ends_quietly(monkeypatch, capsys):
    """`xmkd config --list | head -1`: the reader leaves; xmkd stops with 141 and no traceback."""
    import os

    from xmkd.cli import main

    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w", buffering=1) as stdout:  # line-buffered: the first line meets the closed pipe
        monkeypatch.setattr("sys.stdout", stdout)
        assert main(["config", "--list"]) == 141
        monkeypatch.undo()
    assert "Traceback" not in capsys.readouterr().err


def test_nuscenes_entry_points_without_the_devkit_say_how_to_install_it(tmp_path, capsys, monkeypatch):
    """A wheel installed without the `[nuscenes]` extra: no ModuleNotFoundError traceback, the extra named."""
    for name in [m for m in sys.modules if m == "nuscenes" or m.startswith("nuscenes.")] + ["nuscenes",
                                                                                            "nuscenes.utils.splits"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import nuscenes...` now raises ImportError
    (tmp_path / "nusc" / "v1.0-mini").mkdir(parents=True)
    root = str(tmp_path / "nusc")
    for argv in (["prepare", "nuscenes", "--root", root, "--out", str(tmp_path / "index"), "--quiet"],
                 ["inspect", "nuscenes", "--root", root], ["viz", "nuscenes", "--root", root, "--out",
                                                            str(tmp_path / "viz")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "needs nuscenes-devkit" in err and "pip install 'xmkd[nuscenes]'" in err, err
        assert "Traceback" not in err and "ModuleNotFoundError" not in err
    assert main(["demo", "--out", str(tmp_path / "demo"), "--budget", "tiny"]) == 1
    captured = capsys.readouterr()
    assert "xmkd demo renders its synthetic world in nuScenes format" in captured.err
    assert "pip install 'xmkd[nuscenes]'" in captured.err and "Traceback" not in captured.err
    assert captured.out == "" and not (tmp_path / "demo").exists()  # said at its start, before any work


def test_a_list_key_given_a_word_says_what_it_expects(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  cameras: none\n")
    assert main(["config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "key 'data.cameras': got 'none'; expected a list of camera names, [] for none, null for all" in err, err
    assert "AnyNode" not in err
    assert main(["config", "data.cameras=none"]) == 1
    assert "expected a list of camera names, [] for none, null for all" in capsys.readouterr().err


def test_a_missing_validation_split_fails_before_the_run_directory(tmp_path, capsys):
    from xmkd.data.synthetic.synth import SynthOptions, synthesize_indexed

    data = tmp_path / "data"
    synthesize_indexed(SynthOptions(out=str(data), preset="day", format="nuscenes", frames=2, frames_per_scene=2,
                                    image_size=(48, 24), cameras=("CAM_FRONT",)), "nuscenes", progress=False)
    runs = tmp_path / "runs"
    assert main(["train", "point_mlp/synthetic", f"data.root={data}",
                 "data.train_split=train", "data.val_split=valid", "data.batch_size=1", "train.max_iters=1",
                 f"output_dir={runs}", "name=x", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "split 'valid' not in the index" in err and "Traceback" not in err, err
    assert not runs.exists()


@pytest.mark.parametrize("command", [["eval"], ["predict", "--split", "synthetic_val", "--out", "preds"]])
def test_a_folder_without_a_run_is_refused_by_name(command, tmp_path, capsys):
    (tmp_path / "notarun").mkdir()
    args = [a if a != "preds" else str(tmp_path / "preds") for a in command]
    assert main([args[0], str(tmp_path / "notarun"), *args[1:]]) == 1
    assert f"{tmp_path / 'notarun'}: not a run directory (no config.yaml)" in capsys.readouterr().err


@pytest.mark.parametrize("recipe, says", [("nosuch", "unknown recipe 'nosuch'"),
                                          ("os:getcwd", "os:getcwd is not a recipe")])
def test_a_run_naming_no_recipe_is_refused_with_its_config_file(recipe, says, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(f"recipe: {recipe}\n")
    for command in (["eval"], ["predict", "--split", "x", "--out", str(tmp_path / "preds")]):
        assert main([command[0], str(tmp_path / "run"), *command[1:]]) == 1
        err = capsys.readouterr().err
        assert f"{tmp_path / 'run' / 'config.yaml'}: recipe: {says}" in err and "Traceback" not in err
