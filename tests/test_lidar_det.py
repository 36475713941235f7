"""`lidar_det` (SECOND) end to end on a tiny synthetic KITTI-format set: it overfits two frames, `xmkd infer`
writes KITTI prediction files and `xmkd eval-kitti` scores them."""

import json
from pathlib import Path

import numpy as np
import pytest

from xmkd.cli import main
from xmkd.config import load_config
from xmkd.data.index import prepare
from xmkd.data.synthetic.synth import SynthOptions, synthesize
from xmkd.engine.predict import load_trained
from xmkd.engine.trainer import Trainer
from xmkd.geometry.iou import bev_iou
from xmkd.recipes import get_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    root = tmp_path_factory.mktemp("det") / "kitti"
    synthesize(SynthOptions(out=str(root), format="kitti", frames=4, frames_per_scene=2), progress=False)
    prepare("kitti_object", root, root / "xmkd_index", progress=False)
    return root


def test_second_overfits_two_frames_and_writes_kitti_predictions(kitti, tmp_path):
    recipe = get_recipe("lidar_det")
    cfg = load_config(REPO / "configs" / "lidar_det" / "synthetic.yaml", [
        f"data.root={kitti}", f"output_dir={tmp_path}", "name=second", "data.val_split=train", "data.num_workers=0",
        "train.max_iters=60", "train.val_every=60", "train.ckpt_every=60", "train.schedule.name=constant",
        "model.augment.flip=false", "model.augment.rotate=0.0", "model.augment.scale=[1.0,1.0]"], schema=recipe.schema)
    metrics = Trainer(cfg, recipe, progress=False).fit()
    assert "car_3d_r40_moderate" in metrics
    run = tmp_path / "second"
    trained = load_trained(run)
    found = total = 0
    for i in range(2):
        sample = trained.val_dataset()[i]
        det = trained.detect(trained.collate([sample]))[0]
        cars = sample["boxes"][sample["labels"] == 0]
        total += len(cars)
        if len(det["boxes"]) and len(cars):
            found += int((bev_iou(cars.astype(np.float64), det["boxes"].astype(np.float64)).max(1) > 0.5).sum())
    assert total >= 3 and found >= 0.8 * total, (found, total)
    out = tmp_path / "pred"
    assert main(["infer", str(run), "--split", "train", "--out", str(out), "--quiet", "--workers", "0"]) == 0
    files = sorted(out.glob("*.txt"))
    assert [f.stem for f in files] == (kitti / "ImageSets" / "train.txt").read_text().split()
    assert all(len(line.split()) == 16 for f in files for line in f.read_text().splitlines())
    assert main(["eval-kitti", "--gt", str(kitti / "training" / "label_2"), "--pred", str(out), "--split",
                 str(kitti / "ImageSets" / "train.txt"), "--json", str(tmp_path / "ap.json")]) == 0
    assert "Car/3d/R40/strict/moderate" in json.loads((tmp_path / "ap.json").read_text())


def test_infer_refuses_a_segmentation_run(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("recipe: point_mlp\n")
    (tmp_path / "checkpoints").mkdir()
    assert main(["infer", str(tmp_path), "--split", "val", "--out", str(tmp_path / "o")]) == 1
    assert "does not predict boxes" in capsys.readouterr().err
