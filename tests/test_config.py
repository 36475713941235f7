from pathlib import Path

import pytest
import yaml

from xmkd.config import (
    CONFIG_DIR,
    ExperimentConfig,
    list_configs,
    load_config,
    peek_recipe,
    resolve_config,
    save_config,
)
from xmkd.errors import XmkdConfigError
from xmkd.recipes import get_recipe

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base" / "data.yaml", "data:\n  dataset: nuscenes\n  batch_size: 4\n  cameras: [CAM_FRONT]\n")
    write(tmp_path / "base" / "train.yaml", "train:\n  epochs: 50\n  optimizer: {name: sgd, lr: 0.24}\n")
    cfg_path = write(tmp_path / "exp.yaml",
                     "defaults: [base/data.yaml, base/train.yaml]\nname: exp\ndata:\n  batch_size: 8\n")
    cfg = load_config(cfg_path, ["train.optimizer.lr=0.1", "data.cameras=[CAM_FRONT,CAM_BACK]"])
    assert cfg.name == "exp" and cfg.data.dataset == "nuscenes"
    assert cfg.data.batch_size == 8  # the file overrides its defaults
    assert cfg.train.epochs == 50 and cfg.train.optimizer.lr == 0.1  # the command line overrides the file
    assert list(cfg.data.cameras) == ["CAM_FRONT", "CAM_BACK"]
    assert cfg.train.optimizer.momentum == 0.9  # schema default


def test_misspelled_key_names_key_and_file(tmp_path):
    write(tmp_path / "base.yaml", "data:\n  batch_siz: 4\n")
    cfg_path = write(tmp_path / "exp.yaml", "defaults: [base.yaml]\nname: x\n")
    with pytest.raises(XmkdConfigError) as err:
        load_config(cfg_path)
    msg = str(err.value)
    assert "base.yaml" in msg and "data.batch_siz" in msg and "batch_size" in msg and "\n" not in msg


def test_wrong_type_names_key_and_file(tmp_path):
    cfg_path = write(tmp_path / "exp.yaml", "train:\n  epochs: many\n")
    with pytest.raises(XmkdConfigError, match=r"exp\.yaml: key 'train\.epochs'.*many"):
        load_config(cfg_path)


def test_bad_override_and_bad_files(tmp_path):
    with pytest.raises(XmkdConfigError, match=r"override 'seed=x'"):
        load_config(None, ["seed=x"])
    with pytest.raises(XmkdConfigError, match="expected key=value"):
        load_config(None, ["seed"])
    with pytest.raises(XmkdConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(XmkdConfigError, match="not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "data: [unclosed\n"))
    a = write(tmp_path / "a.yaml", "defaults: [b.yaml]\n")
    write(tmp_path / "b.yaml", "defaults: [a.yaml]\n")
    with pytest.raises(XmkdConfigError, match="cycle"):
        load_config(a)


def test_resolved_config_written_to_run_dir(tmp_path):
    cfg = load_config(None, ["name=run1", "seed=3"])
    path = save_config(cfg, tmp_path / "runs" / "run1")
    assert path.name == "config.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["seed"] == 3 and data["data"]["batch_size"] == 2
    assert load_config(path).seed == 3  # a saved config loads back as it was
    assert not list(path.parent.glob(".*tmp"))


def test_shipped_dataset_sections_validate():
    configs = sorted((REPO / "configs" / "_base").rglob("*.yaml"))  # recipe configs: tests/test_recipes.py
    assert configs, "no configs shipped"
    for path in configs:
        cfg = load_config(path, schema=ExperimentConfig)
        assert cfg.data.dataset


def test_data_cameras_null_is_every_camera_and_empty_is_none():
    import torch

    from xmkd.recipes import get_recipe

    assert load_config(None).data.cameras is None
    assert load_config(None, ["data.cameras=[]"]).data.cameras == []
    assert load_config(REPO / "configs" / "lidar_seg" / "semantickitti_teacher.yaml",
                       schema=get_recipe("lidar_seg").schema).data.cameras == []
    cfg = load_config(REPO / "configs" / "u2mkd" / "synthetic.yaml", ["data.cameras=[]"],
                      schema=get_recipe("u2mkd").schema)
    with pytest.raises(XmkdConfigError, match=r"u2mkd needs cameras: data.cameras is \[\] \(none\)"):
        get_recipe("u2mkd")(cfg, torch.device("cpu")).frames("train")


def test_shipped_configs_are_package_data_and_resolve_by_name(tmp_path, monkeypatch):
    assert CONFIG_DIR == REPO / "xmkd" / "configs" and (REPO / "configs").resolve() == CONFIG_DIR  # one copy
    names = list_configs()
    assert "u2mkd/synthetic" in names and "_base/data/nuscenes" in names
    assert len(names) == len(list((REPO / "configs").rglob("*.yaml")))
    monkeypatch.chdir(tmp_path)  # no configs/ here: every spelling finds the shipped file
    shipped = CONFIG_DIR / "u2mkd" / "synthetic.yaml"
    for spelling in ("u2mkd/synthetic", "u2mkd/synthetic.yaml", "configs/u2mkd/synthetic.yaml"):
        assert resolve_config(spelling) == shipped
    cfg = load_config("u2mkd/synthetic", ["seed=4"], schema=get_recipe("u2mkd").schema)
    assert cfg.name == "u2mkd_student_synthetic" and cfg.seed == 4
    assert cfg.data.root == "data/synthetic/nuscenes"  # its `defaults: [../_base/data/synthetic.yaml]` resolved
    assert peek_recipe("ftd/synthetic_day_night") == "ftd"  # two levels of defaults
    # a file of that name in the working directory wins over the shipped one
    write(tmp_path / "u2mkd" / "synthetic.yaml", "name: mine\n")
    assert resolve_config("u2mkd/synthetic.yaml") == Path("u2mkd/synthetic.yaml")
    assert load_config("u2mkd/synthetic.yaml").name == "mine"
    # a user's config outside the package inherits a shipped one by name
    mine = write(tmp_path / "exp" / "mine.yaml", "defaults: [lidar_seg/synthetic]\nname: exp\n")
    cfg = load_config(mine, schema=get_recipe("lidar_seg").schema)
    assert cfg.name == "exp" and cfg.recipe == "lidar_seg" and cfg.data.root == "data/synthetic/nuscenes"
    with pytest.raises(XmkdConfigError, match=r"no shipped config is named 'u2mkd/synthtic'; did you mean "
                                              r"u2mkd/synthetic"):
        load_config("u2mkd/synthtic")
    with pytest.raises(XmkdConfigError, match=r"mine.yaml.*no shipped config is named 'nope'"):
        load_config(write(tmp_path / "exp" / "mine.yaml", "defaults: [nope.yaml]\n"))


@pytest.mark.parametrize("text, overrides, key, expected", [
    ("data:\n  cameras: {a: 1}\n", [], "data.cameras", "expected a list of camera names"),
    ("", ["data.point_range={a: 1}"], "data.point_range", "expected a list"),
    ("data: [1, 2]\n", [], "data", "expected a mapping of its keys (dataset, "),
    ("train: {optimizer: adam}\n", [], "train.optimizer", "expected a mapping of its keys (name, lr"),
    ("train: 5\n", [], "train", "expected a mapping"),
    ("seed: [1]\n", [], "seed", "expected a single int value"),
    ("data:\n  point_range: [1, {a: 2}]\n", [], "data.point_range", "expected a list of float values"),
])
def test_container_of_the_wrong_kind_names_file_key_and_expected(tmp_path, text, overrides, key, expected):
    # OmegaConf alone gives a bare TypeError ("Cannot merge incompatible container types") or a merge error
    # without the key for these (issue 19's tester)
    path = write(tmp_path / "F.yaml", "defaults: [lidar_seg/synthetic]\n" + text)
    with pytest.raises(XmkdConfigError) as err:
        load_config(path, overrides, schema=get_recipe("lidar_seg").schema)
    msg = str(err.value)
    origin = f"override {overrides[0]!r}" if overrides else str(path)
    assert msg.startswith(origin) and f"key '{key}'" in msg and expected in msg, msg
