"""`xmkd predict`: a trained run's predictions in the official submission formats, resumable."""

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_nuscenes

from xmkd.cli import main
from xmkd.config import load_config
from xmkd.data.index import IndexedFrames, prepare
from xmkd.data.labels import SEMANTIC_KITTI_LEARNING_MAP, get_label_space
from xmkd.data.synthetic.synth import SynthOptions, synthesize
from xmkd.engine.trainer import Trainer
from xmkd.recipes import get_recipe

REPO = Path(__file__).resolve().parents[1]


def train_two_steps(root: Path, out: Path, *extra: str) -> Path:
    recipe = get_recipe("lidar_seg")
    cfg = load_config(REPO / "configs" / "lidar_seg" / "synthetic.yaml", [
        f"data.root={root}", f"output_dir={out}", "name=run", "data.num_workers=0", "train.max_iters=2",
        "train.val_every=2", "train.ckpt_every=2", "model.max_points=2000", "data.voxel_size=0.6", *extra],
        schema=recipe.schema)
    Trainer(cfg, recipe, progress=False).fit()
    return out / "run"


@pytest.fixture(scope="module")
def nus(tmp_path_factory):
    return tiny_nuscenes(tmp_path_factory.mktemp("predict") / "nus", frames=2, frames_per_scene=2)


def test_nuscenes_lidarseg_bin_files(nus, tmp_path, capsys):
    run = train_two_steps(nus, tmp_path, "data.train_split=mini_train", "data.val_split=mini_train",
                          "data.point_range=[-12,-12,-3,12,12,3]")  # most points lie outside: they are clipped
    out = tmp_path / "results"
    assert main(["predict", str(run), "--split", "mini_train", "--out", str(out), "--quiet", "--workers", "0"]) == 0
    frames = IndexedFrames(nus / "xmkd_index", "mini_train")
    for frame in frames:
        path = out / "lidarseg" / "mini_train" / f"{frame.meta['lidar_token']}_lidarseg.bin"
        pred = np.fromfile(path, dtype=np.uint8)
        assert pred.shape == (frame.num_points,)  # every point of the scan, including those beyond the range
        assert pred.min() >= 1 and pred.max() <= 16
    assert (out / "mini_train" / "submission.json").exists()
    bins = sorted((out / "lidarseg" / "mini_train").glob("*.bin"))
    stamp = [p.stat().st_mtime_ns for p in bins]
    assert main(["predict", str(run), "--split", "mini_train", "--out", str(out), "--quiet", "--workers", "0"]) == 0
    assert "0 frames (2 already done)" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in bins] == stamp


def test_semantickitti_label_files_hold_raw_ids(tmp_path):
    root = tmp_path / "sk"
    synthesize(SynthOptions(out=str(root), format="semantickitti", frames=2, frames_per_scene=2), progress=False)
    prepare("semantickitti", root, root / "xmkd_index", progress=False)
    run = train_two_steps(root, tmp_path, "data.dataset=semantickitti", "data.label_space=semantickitti19",
                          "data.train_split=train", "data.val_split=train")
    out = tmp_path / "results"
    assert main(["predict", str(run), "--split", "train", "--out", str(out), "--quiet", "--workers", "0"]) == 0
    space = get_label_space("semantickitti19")
    for frame in IndexedFrames(root / "xmkd_index", "train"):
        raw = np.fromfile(out / "sequences" / "00" / "predictions" / f"{frame.meta['scan']:06d}.label", np.uint32)
        assert raw.shape == (frame.num_points,)
        assert set(np.unique(raw).tolist()) <= set(SEMANTIC_KITTI_LEARNING_MAP)
        # the raw ids map back to classes the label space knows (none is ignore)
        assert (space.from_raw(raw.astype(np.int64)) != space.ignore_index).all()


def test_predict_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--split", "val", "--out", str(tmp_path / "o")]) == 1
    assert "no config.yaml" in capsys.readouterr().err


def test_an_unlabelled_frame_is_predicted_like_a_labelled_one(nus, tmp_path):
    """`xmkd predict` on a test split (no point labels): the frame is predicted, not refused; training still
    refuses it."""
    import dataclasses

    from xmkd.errors import XmkdDataError
    from xmkd.runs.predict import load_trained, predict_frame

    run = train_two_steps(nus, tmp_path, "data.train_split=mini_train", "data.val_split=mini_train",
                          "data.point_range=[-12,-12,-3,12,12,3]")
    recipe = load_trained(run)
    frame = next(iter(IndexedFrames(nus / "xmkd_index", "mini_train")))
    bare = dataclasses.replace(frame, labels=None)
    assert np.array_equal(predict_frame(recipe, bare), predict_frame(recipe, frame))
    with pytest.raises(XmkdDataError, match="no point labels"):
        recipe.make_sample(bare, np.random.default_rng(0))


def test_point_mlp_makes_an_evaluation_sample_of_an_unlabelled_frame(nus, tmp_path):
    import dataclasses

    import torch

    from xmkd.errors import XmkdDataError

    recipe_cls = get_recipe("point_mlp")
    cfg = load_config(REPO / "configs" / "point_mlp" / "synthetic.yaml", [f"data.root={nus}", f"output_dir={tmp_path}"],
                      schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    frame = next(iter(IndexedFrames(nus / "xmkd_index", "mini_train")))
    bare = dataclasses.replace(frame, labels=None)
    sample = recipe.make_sample(bare, None)
    assert len(sample["labels"]) == frame.num_points and (sample["labels"] == recipe.space.ignore_index).all()
    assert np.array_equal(sample["features"], recipe.make_sample(frame, None)["features"])
    with pytest.raises(XmkdDataError, match="no point labels"):
        recipe.make_sample(bare, np.random.default_rng(0))
