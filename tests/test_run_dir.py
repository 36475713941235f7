"""Reading a run directory's saved config back (xmkd.runs.run_dir)."""

import json

import pytest
import yaml

from xmkd.config import CONFIG_DIR, load_config, save_config
from xmkd.errors import XmkdError
from xmkd.recipes import get_recipe
from xmkd.runs.config_changes import IGNORED, config_changes, same_target
from xmkd.runs.run_dir import run_config
from xmkd.runs.train import train_or_reuse


def _saved_without(tmp_path, recipe, config, overrides, *keys):
    """A run folder whose config.yaml lacks `keys` (dotted), as one saved before those keys existed."""
    run = tmp_path / recipe
    save_config(load_config(CONFIG_DIR / config, overrides, schema=get_recipe(recipe).schema), run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    for key in keys:
        *parents, leaf = key.split(".")
        node = saved
        for p in parents:
            node = node[p]
        del node[leaf]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    return run


def test_a_run_saved_before_a_key_existed_keeps_the_behaviour_it_was_trained_with(tmp_path):
    # runs saved before model.voxel_feature averaged their voxels; the default is now the release's "first"
    run = _saved_without(tmp_path, "lidar_seg", "lidar_seg/nuscenes_teacher.yaml", [], "model.voxel_feature")
    assert run_config(run)[1].model.voxel_feature == "mean"
    assert run_config(run, ["model.voxel_feature=first"])[1].model.voxel_feature == "first"
    run = _saved_without(tmp_path, "u2mkd", "u2mkd/nuscenes.yaml", [], "model.voxel_feature",
                         "model.teacher.voxel_feature", "model.pixel_head_at_image")
    cfg = run_config(run)[1]
    assert (cfg.model.voxel_feature, cfg.model.teacher.voxel_feature) == ("mean", "mean")
    assert cfg.model.pixel_head_at_image is False  # the release's order became the default after the key existed
    # FtD++ runs saved before the release's 3D shift and float stylised images existed had neither (today: both on)
    run = _saved_without(tmp_path, "ftd", "ftd/synthetic_day_night.yaml", [], "model.translate_3d",
                         "model.style_float", "train.schedule.final_ratio")
    cfg, today = run_config(run)[1], get_recipe("ftd").schema().model
    assert (cfg.model.translate_3d, cfg.model.style_float) == (False, False)
    assert today.translate_3d and today.style_float
    assert cfg.train.schedule.final_ratio == 1e-4
    # a run that saved the key keeps its own value
    run = _saved_without(tmp_path / "new", "lidar_seg", "lidar_seg/nuscenes_teacher.yaml", [])
    assert run_config(run)[1].model.voxel_feature == "first"


def test_hsrdn_runs_from_before_relation_gradient_trained_with_it_and_cmkd_runs_are_the_same_runs(tmp_path):
    # HSRDN runs saved before model.relation_gradient existed trained the student with the relation terms; the
    # default is now the release's (logged only), so such a run is not the run the default asks for
    run = _saved_without(tmp_path, "hsrdn", "hsrdn/synthetic_bev.yaml", [], "model.relation_gradient")
    assert run_config(run)[1].model.relation_gradient is True
    today = load_config(CONFIG_DIR / "hsrdn/synthetic_bev.yaml", [], schema=get_recipe("hsrdn").schema)
    assert today.model.relation_gradient is False
    assert config_changes(run, today) == [("model.relation_gradient", True, False)]
    # a CMKD run (relation weights 0) trains alike under any relation setting: it stays reusable
    run = _saved_without(tmp_path / "c", "cmkd", "cmkd/synthetic.yaml", [], "model.relation_gradient")
    cmkd = load_config(CONFIG_DIR / "cmkd/synthetic.yaml", [], schema=get_recipe("cmkd").schema)
    assert run_config(run)[1].model.relation_gradient is True and config_changes(run, cmkd) == []
    nodes = load_config(CONFIG_DIR / "cmkd/synthetic.yaml", ["model.max_nodes=32"], schema=get_recipe("cmkd").schema)
    assert config_changes(run, nodes) == []  # the node count is a relation setting too
    other = load_config(CONFIG_DIR / "cmkd/synthetic.yaml", ["model.relation_nodes=cross", "model.weights.angle=1",
                                                            "model.max_nodes=32"],
                        schema=get_recipe("cmkd").schema)  # a relation weight switches the group on: compared
    assert {k for k, _, _ in config_changes(run, other)} == {"model.relation_gradient", "model.relation_nodes",
                                                               "model.weights.angle", "model.max_nodes"}


# -- resuming or reusing a run only under the config it was trained with (xmkd.runs.config_changes) ----------------

CONFIG = "lidar_seg/synthetic.yaml"


class _Resumed:
    """Stands in for the Trainer: records how it was started (resume or not, with which config)."""

    calls: list = []

    def __init__(self, cfg, recipe, resume=False, **kw):
        _Resumed.calls.append((cfg, resume))

    def fit(self):
        return {"miou": 0.25}


def _run(tmp_path, overrides=(), without=(), finished=False, config=CONFIG):
    """A run folder holding an interrupted (or finished) lidar_seg run: its config.yaml (less the keys `without`, as
    one saved before they existed) and a last.pt (a stand-in: the Trainer is replaced where it would load it)."""
    import torch

    base = ["train.max_iters=3", f"output_dir={tmp_path}", "name=run", "data.root=data/somewhere"]
    run = _saved_without(tmp_path, "lidar_seg", config, [*base, *overrides], *without)
    run.rename(tmp_path / "run")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir()
    # the config the Trainer stores in a checkpoint: the saved side when config.yaml is missing
    torch.save({"step": 3 if finished else 1, "config": (run / "config.yaml").read_text()},
               run / "checkpoints" / "last.pt")
    if finished:
        (run / "metrics.jsonl").write_text(json.dumps({"kind": "val", "step": 3, "miou": 0.5}) + "\n")
    return run, base


@pytest.fixture
def trainer(monkeypatch):
    import xmkd.engine.trainer
    import xmkd.runs.train

    _Resumed.calls = []
    monkeypatch.setattr(xmkd.runs.train, "Trainer", _Resumed)
    monkeypatch.setattr(xmkd.engine.trainer, "Trainer", _Resumed)
    return _Resumed.calls


def test_an_interrupted_run_resumes_only_with_the_config_it_started_with(tmp_path, trainer):
    run, base = _run(tmp_path)
    with pytest.raises(XmkdError) as err:
        train_or_reuse(CONFIG, [*base, "train.optimizer.lr=0.5", "train.max_iters=5"], run)
    msg = str(err.value)
    assert msg.startswith(f"{run}: holds a run trained with another config") and not trainer
    assert "train.optimizer.lr: saved 0.003, requested 0.5" in msg
    assert "train.max_iters: saved 3, requested 5 (an annealed schedule cannot be stretched)" in msg
    assert f"delete {run}" in msg and "(train.max_iters=3 train.optimizer.lr=0.003)" in msg
    # keys that do not change what is trained are not compared (each is in IGNORED, with why)
    ignored = ["data.num_workers=0", "train.log_every=1", "train.ckpt_every=7", "device=cpu", "data.test_split=x",
               "train.keep_snapshots=true", "train.epochs=99"]  # epochs: not read while max_iters > 0
    assert {o.split("=")[0] for o in ignored} - {"train.epochs"} <= set(IGNORED)
    assert train_or_reuse(CONFIG, [*base, *ignored], run) == {"miou": 0.25}
    assert trainer[-1][1] is True and trainer[-1][0].data.num_workers == 0  # resumed, with the new worker count


def test_a_run_saved_before_voxel_feature_resumes_only_with_the_value_it_was_trained_with(tmp_path, trainer):
    # an older run (its voxels were averaged), of a config that leaves the key at today's default (the release's first)
    nus = "lidar_seg/nuscenes_teacher.yaml"
    run, base = _run(tmp_path, without=["model.voxel_feature"], config=nus)
    with pytest.raises(XmkdError, match=r"model.voxel_feature: saved 'mean', requested 'first'(.|\n)*"
                                        r"overrides \(model.voxel_feature=mean\)"):
        train_or_reuse(nus, base, run)
    assert train_or_reuse(nus, [*base, "model.voxel_feature=mean"], run) == {"miou": 0.25}
    assert trainer[-1][1] is True and trainer[-1][0].model.voxel_feature == "mean"


def test_a_finished_run_is_reused_only_when_its_config_matches(tmp_path, trainer):
    run, base = _run(tmp_path, ["model.lovasz_weight=0.5"], finished=True)
    with pytest.raises(XmkdError, match="model.lovasz_weight: saved 0.5, requested 1.0"):
        train_or_reuse(CONFIG, base, run)
    with pytest.raises(XmkdError, match="train.val_every: saved 1, requested 3"):  # validation draws random numbers
        train_or_reuse(CONFIG, [*base, "model.lovasz_weight=0.5", "train.val_every=3"], run)
    assert train_or_reuse(CONFIG, [*base, "model.lovasz_weight=0.5", "data.num_workers=3"], run) == {"miou": 0.5}
    # pasting off on both sides (no database): its other keys do not matter (the cap's default went 4000 -> 5000)
    assert train_or_reuse(CONFIG, [*base, "model.lovasz_weight=0.5", "model.paste.max_added_points=4000"], run) == {
        "miou": 0.5}
    with pytest.raises(XmkdError, match="model.paste.database: saved '', requested 'db'"):
        train_or_reuse(CONFIG, [*base, "model.lovasz_weight=0.5", "model.paste.database=db"], run)
    assert not trainer  # reused, not trained


def test_xmkd_train_resume_refuses_a_changed_config_unless_allowed(tmp_path, trainer, capsys):
    from xmkd.cli import main

    run, base = _run(tmp_path)
    cmd = ["train", str(CONFIG_DIR / CONFIG), *base, "train.grad_clip=5", "--resume", "--quiet"]
    assert main(cmd) == 1 and not trainer
    err = capsys.readouterr().err
    assert "train.grad_clip: saved 0.0, requested 5.0" in err and "--allow-config-change" in err
    assert main([*cmd, "--allow-config-change"]) == 0 and trainer[-1][1] is True
    assert "resuming" in (err := capsys.readouterr().err) and "train.grad_clip: saved 0.0, requested 5.0" in err
    assert main([*cmd[:-3], "data.num_workers=0", "--resume"]) == 0  # an ignored key: resumes, and says so
    assert "data.num_workers: saved 1, requested 0" in capsys.readouterr().err


def test_path_keys_compare_what_they_name(tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    a, b, c = (tmp_path / n for n in ("a.pt", "b.pt", "c.pt"))
    a.write_bytes(b"weights")
    b.write_bytes(b"weights")
    c.write_bytes(b"other!!")
    os.link(a, tmp_path / "a_link.pt")
    assert same_target("a.pt", str(a)) and same_target(str(a), str(tmp_path / "a_link.pt"))
    assert same_target(str(a), str(b)) and not same_target(str(a), str(c))
    assert not same_target("gone.pt", "also_gone.pt") and not same_target(str(a), "")
    for name, root, frames in (("d1", "/x/d1", [1, 2]), ("d2", "/y/d2", [1, 2]), ("d3", "/z/d3", [1, 3])):
        (tmp_path / name / "xmkd_index").mkdir(parents=True)
        index = {"format": "xmkd-index/1", "root": root, "frames": frames}
        (tmp_path / name / "xmkd_index" / "index.json").write_text(json.dumps(index))
    assert same_target("d1", "d2") and not same_target("d1", "d3")  # a copied dataset; another one
    # a finished run whose data and teacher were copied elsewhere is the same run
    run, base = _run(tmp_path / "runs", ["data.root=d1"])
    schema = get_recipe("lidar_seg").schema
    assert config_changes(run, load_config(CONFIG_DIR / CONFIG, [*base, "data.root=d2"], schema=schema)) == []
    assert config_changes(run, load_config(CONFIG_DIR / CONFIG, [*base, "data.root=d3"], schema=schema)) == [
        ("data.root", "d1", "d3")]
    # pasting on (a database, copied): its cap is compared
    run, base = _run(tmp_path / "runs2", ["model.paste.database=d1"])
    cfg = load_config(CONFIG_DIR / CONFIG, [*base, "model.paste.database=d2", "model.paste.max_added_points=4000"],
                      schema=schema)
    assert config_changes(run, cfg) == [("model.paste.max_added_points", 5000, 4000)]
    # a moved dataset (the saved path names nothing now) cannot be compared: said so, and not offered as an override
    (tmp_path / "d1").rename(tmp_path / "moved")
    with pytest.raises(XmkdError) as err:
        train_or_reuse(CONFIG, [*base, "model.paste.database=moved"], run)
    assert "model.paste.database: saved 'd1', requested 'moved' (the saved path does not exist from here" in \
        str(err.value)
    assert "model.paste.database=d1" not in str(err.value)


def test_values_a_recipe_treats_alike_are_the_same_run(tmp_path):
    # xMUDA-family recipes read a domain's camera as cameras[0], else model.camera: [] and null alike (older UDA runs
    # saved []); lidar_seg reads [] as no camera and null as every one
    for recipe, config, same in (("xmuda", "xmuda/synthetic_day_night.yaml", True), ("lidar_seg", CONFIG, False)):
        schema = get_recipe(recipe).schema
        base = ["train.max_iters=3", f"output_dir={tmp_path}", f"name={recipe}"]
        save_config(load_config(CONFIG_DIR / config, [*base, "data.cameras=[]"], schema=schema), tmp_path / recipe)
        changes = config_changes(tmp_path / recipe, load_config(CONFIG_DIR / config, base, schema=schema))
        assert changes == ([] if same else [("data.cameras", [], None)])


def test_settings_the_resumed_state_holds_cannot_change_even_when_allowed(tmp_path, trainer, capsys):
    from xmkd.cli import main

    run, base = _run(tmp_path)
    cmd = ["train", str(CONFIG_DIR / CONFIG), *base]
    flags = ["--resume", "--quiet", "--allow-config-change"]
    # last.pt's optimizer / schedule state_dicts hold lr, weight_decay, betas, base_lrs: a change would not apply
    for change in ("train.optimizer.lr=0.5", "train.optimizer.weight_decay=0.5", "train.schedule.name=step",
                   "train.max_iters=5"):
        assert main([*cmd, change, *flags]) == 1 and not trainer
        err = capsys.readouterr().err
        assert f"{change.split('=')[0]}: saved" in err and "cannot change on resume, even with --allow-config-change" \
            in err
    assert main([*cmd, "train.optimizer.lr=0.5", *flags]) == 1
    assert "the optimizer's state in last.pt holds its settings (lr, " in capsys.readouterr().err
    assert main([*cmd, "train.grad_clip=5", *flags]) == 0 and trainer  # read from the config at every step: applied
    assert main(["train", str(CONFIG_DIR / CONFIG), *base, "--allow-config-change"]) == 1  # only with --resume
    assert "--allow-config-change only applies with --resume" in capsys.readouterr().err


def test_a_run_without_config_yaml_is_compared_with_the_config_its_checkpoint_stores(tmp_path, trainer, capsys):
    from xmkd.cli import main

    run, base = _run(tmp_path)
    (run / "config.yaml").unlink()
    with pytest.raises(XmkdError, match=r"last.pt \(the config it stores; .*config.yaml is missing\)(.|\n)*"
                                        r"model.lovasz_weight: saved 1.0, requested 0.5"):
        train_or_reuse(CONFIG, [*base, "model.lovasz_weight=0.5"], run)
    assert not trainer and train_or_reuse(CONFIG, base, run) == {"miou": 0.25} and trainer[-1][1] is True
    cmd = ["train", str(CONFIG_DIR / CONFIG), *base, "model.lovasz_weight=0.5", "--resume", "--quiet"]
    assert main(cmd) == 1 and "model.lovasz_weight: saved 1.0, requested 0.5" in capsys.readouterr().err
    assert main([*cmd, "--allow-config-change"]) == 0 and "model.lovasz_weight" in capsys.readouterr().err
    import torch  # a checkpoint that stores no config: nothing to compare with

    torch.save({"step": 1}, run / "checkpoints" / "last.pt")
    with pytest.raises(XmkdError, match=r"last.pt: the checkpoint stores no config"):
        train_or_reuse(CONFIG, base, run)


@pytest.mark.parametrize("saved", ["a key since removed", "not yaml", "empty"])
def test_a_saved_config_that_cannot_be_read_is_refused_unless_allowed(tmp_path, trainer, capsys, saved):
    from xmkd.cli import main

    run, base = _run(tmp_path)
    text = {"a key since removed": (run / "config.yaml").read_text().replace("train:\n", "train:\n  gone_key: 1\n"),
            "not yaml": "recipe: [lidar_seg\n", "empty": ""}[saved]
    (run / "config.yaml").write_text(text)
    cmd = ["train", str(CONFIG_DIR / CONFIG), *base, "--resume", "--quiet"]
    assert main(cmd) == 1 and not trainer
    err = capsys.readouterr().err
    assert f"{run / 'config.yaml'}: the run's saved config cannot be read" in err and "--allow-config-change" in err
    assert main([*cmd, "--allow-config-change"]) == 0 and trainer[-1][1] is True  # resumes (as before the check)
    err = capsys.readouterr().err
    assert f"{run / 'config.yaml'}: the run's saved config cannot be read" in err and "resuming without" in err
    with pytest.raises(XmkdError, match=f"{run / 'config.yaml'}: the run's saved config cannot be read"):
        train_or_reuse(CONFIG, base, run)


def test_amp_runs_compare_the_device_and_messages_are_shell_ready(tmp_path, trainer):
    # train.amp acts on CUDA only: a CPU run with amp on resumed on a GPU would switch to float16 midway
    run, base = _run(tmp_path, ["train.amp=true", "device=cpu"])
    with pytest.raises(XmkdError, match=r"device: saved 'cpu', requested 'cuda' \(AMP acts on CUDA only"):
        train_or_reuse(CONFIG, [*base, "train.amp=true", "device=cuda"], run)
    run, base = _run(tmp_path / "b", ["device=cpu"])
    assert train_or_reuse(CONFIG, [*base, "device=cuda"], run) == {"miou": 0.25}  # no AMP: the same steps
    # saved values as overrides that a shell passes through unchanged; another recipe's run in one line
    run, base = _run(tmp_path / "c", ["data.cameras=[]"])
    with pytest.raises(XmkdError, match=r"overrides \('data.cameras=\[\]'\)"):
        train_or_reuse(CONFIG, base, run)
    xmuda = "xmuda/synthetic_day_night.yaml"
    with pytest.raises(XmkdError, match=r"^\S*c/run: holds a run of recipe 'lidar_seg', not 'xmuda' \(read from "):
        train_or_reuse(xmuda, ["train.max_iters=3"], run)
