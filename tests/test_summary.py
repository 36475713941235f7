"""`xmkd summary`: every shipped synthetic config builds its networks on CPU without data or weight files, and
the counts are those of the modules the recipe built."""

import json

import pytest
import torch

from xmkd.cli import main
from xmkd.config import list_configs, load_config, peek_recipe
from xmkd.errors import XmkdError
from xmkd.io import architecture_only, is_architecture_only
from xmkd.recipes import get_recipe
from xmkd.recipes.summary import build_recipe, summarize_recipe

SYNTHETIC = [n for n in list_configs() if "synthetic" in n and not n.startswith("_base")]


def numel(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", SYNTHETIC)
def test_every_synthetic_config_builds_and_counts(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no dataset, no runs/: teacher checkpoints and indexes named in configs are absent
    recipe = build_recipe(name)
    summary = summarize_recipe(recipe, depth=1)
    rows = {r["name"]: r for r in summary["nets"]}
    modules = {**recipe.nets, **{f"ema/{k}": e.module for k, e in recipe.emas().items()}}
    assert set(rows) == set(modules) and summary["params"] > 0 and summary["trainable"] > 0
    for key, module in modules.items():
        row = rows[key]
        assert row["params"] == numel(module) > 0 and row["class"] == type(module).__name__
        assert sum(c["params"] for c in row["children"]) + sum(p.numel() for p in module.parameters(recurse=False)) \
            == row["params"]
        if row["role"] in ("frozen", "ema"):
            assert row["trainable"] == 0 and not any(p.requires_grad for p in module.parameters())
        else:
            assert 0 < row["trainable"] <= row["params"]
    unique = {id(p): p.numel() for m in modules.values() for p in m.parameters()}
    assert summary["params"] == sum(unique.values())
    assert summary["trainable"] == sum(r["trainable"] for r in summary["nets"])
    teachers = recipe.frozen() | {k for k in rows if k.startswith("ema/")}
    # a BEV-stage student (hsrdn / cmkd `model.stage: bev`) also freezes its own BEV backbone and head
    held = any(not p.requires_grad for k, m in recipe.nets.items() if k not in teachers for p in m.parameters())
    assert (summary["trainable"] < summary["params"]) == bool(teachers or held)
    assert held == name.endswith("_bev")
    if name in ("u2mkd/synthetic", "hsrdn/synthetic", "ftd/synthetic_day_night"):
        assert teachers  # the distilling recipes: a frozen teacher (u2mkd, hsrdn) or EMA mean teachers (ftd)


def test_summary_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["summary", "u2mkd/synthetic", "model.kd=false", "--json", "--depth", "0"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["recipe"] == "u2mkd" and [r["name"] for r in s["nets"]] == ["student"]
    assert s["params"] == s["trainable"] == s["nets"][0]["params"] and s["config"].endswith("u2mkd/synthetic.yaml")
    assert main(["summary", "u2mkd/synthetic"]) == 0
    out = capsys.readouterr().out.splitlines()
    teacher = next(line for line in out if line.startswith("teacher "))
    assert teacher.split()[1:3] == ["SparseUNet", "frozen"] and teacher.split()[-1] == "0"
    assert any(line.startswith("  camera ") for line in out) and out[-1].startswith("total ")
    assert main(["summary", "u2mkd/synthtic"]) == 1
    assert "did you mean u2mkd/synthetic" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "message"), [("u2mkd/synthetic", "model.teacher.checkpoint"),
                                               ("hsrdn/synthetic", "lidar_det_synthetic"),
                                               ("xmuda/synthetic_day_night", "index")])
def test_files_are_skipped_only_inside_architecture_only(name, message, tmp_path, monkeypatch):
    # A training build still needs the teacher checkpoint / the dataset index the config names.
    monkeypatch.chdir(tmp_path)
    recipe_cls = get_recipe(peek_recipe(name))
    recipe = recipe_cls(load_config(name, schema=recipe_cls.schema), torch.device("cpu"))
    with pytest.raises(XmkdError, match=message):
        recipe.build()
    assert not is_architecture_only()
    with architecture_only():
        assert is_architecture_only()
    assert not is_architecture_only()


def test_summary_table_columns_line_up_and_depth_is_not_negative(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["summary", "point_mlp/synthetic", "--depth", "0"]) == 0
    header, row, total = capsys.readouterr().out.splitlines()[1:]
    assert header.index("class") == row.index("PointMLP") and header.index("role") == row.index("trained")
    assert len({len(header), len(row), len(total)}) == 1
    with pytest.raises(SystemExit):
        main(["summary", "point_mlp/synthetic", "--depth", "-1"])
    assert "argument --depth: expected a whole number >= 0, got '-1'" in capsys.readouterr().err


def test_summary_of_a_pseudo_label_config_reads_no_dataset(tmp_path, capsys):
    from xmkd.cli import main
    from xmkd.data.pseudo_labels import PseudoLabels

    pl = PseudoLabels(6)
    pl.finish()
    pl.save(tmp_path / "pl.npz")
    assert main(["summary", "ftd/synthetic_day_night", "model.lambda_pl=1.0", f"model.pseudo_labels={tmp_path}/pl.npz",
                 f"data.root={tmp_path}/none", f"target.root={tmp_path}/none", "--depth", "0"]) == 0
    assert "fusion" in capsys.readouterr().out
