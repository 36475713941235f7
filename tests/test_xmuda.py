"""xMUDA recipe: UDA batches from two domains, class weights, cross-modal KL that never trains its own targets,
and a short day -> night run with the 2D / 3D / xM table."""

from pathlib import Path

import numpy as np
import pytest
import torch

from xmkd.config import load_config
from xmkd.data.index import load_index, prepare
from xmkd.data.synthetic.synth import SynthOptions, synthesize
from xmkd.engine.trainer import Trainer
from xmkd.recipes import get_recipe
from xmkd.recipes.xmuda import class_weights

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    out = {}
    for preset, seed in (("day", 0), ("night", 1)):
        root = tmp_path_factory.mktemp(preset) / "nus"
        synthesize(SynthOptions(out=str(root), preset=preset, frames=4, frames_per_scene=2, seed=seed,
                                image_size=(160, 90), cameras=("CAM_FRONT",), sweeps=False), progress=False)
        prepare("nuscenes", root, root / "xmkd_index", progress=False)
        out[preset] = root
    return out


def config(domains, tmp_path, *extra):
    recipe = get_recipe("xmuda")
    return recipe, load_config(REPO / "configs" / "xmuda" / "synthetic_day_night.yaml", [
        f"data.root={domains['day']}", f"target.root={domains['night']}", f"output_dir={tmp_path}",
        "data.train_split=mini_train", "target.train_split=mini_train", "target.val_split=mini_val",
        "data.num_workers=0", "data.image_size=[96,54]", "target.image_size=[96,54]",
        "model.backbone_2d=resnet18", "model.max_points=1500", *extra], schema=recipe.schema)


def test_uda_step_and_cross_modal_kl_targets_stay_detached(domains, tmp_path):
    recipe_cls, cfg = config(domains, tmp_path)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    w = recipe.weights.numpy()
    assert w.min() == pytest.approx(1.0) and (w >= 1).all()
    assert np.allclose(w, class_weights(load_index(domains["day"] / "xmkd_index"), "mini_train", "nuscenes6"))
    ds = recipe.train_dataset()
    batch = recipe.collate([ds[(0, 0)], ds[(0, 1)]])
    assert set(batch) == {"source", "target"} and len(batch["source"]["images"]) == 2
    losses = recipe.training_step(batch, 0)
    assert set(losses) == {"seg_2d", "seg_3d", "xm_src", "xm_trg"} and all(torch.isfinite(v) for v in losses.values())
    out = recipe.forward(batch["target"])
    recipe.xm_loss(out).backward()
    heads2, heads3 = recipe.nets["net2d"]["head"], recipe.nets["net3d"]["head"]
    assert heads2.main.weight.grad is None and heads3.main.weight.grad is None  # the KL targets are detached
    assert heads2.mimic.weight.grad.abs().sum() > 0 and heads3.mimic.weight.grad.abs().sum() > 0


def test_short_day_to_night_run(domains, tmp_path):
    recipe, cfg = config(domains, tmp_path, "train.max_iters=4", "train.val_every=4", "train.ckpt_every=4")
    metrics = Trainer(cfg, recipe, progress=False).fit()
    assert {"miou_2d", "miou_3d", "miou_xm"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("miou_2d", "miou_3d", "miou_xm"))
