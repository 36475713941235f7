"""xMUDA recipe: UDA batches from two domains, class weights, cross-modal KL that never trains its own targets,
and a short day -> night run with the 2D / 3D / xM table."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xmkd.config import load_config, peek_recipe
from xmkd.data.index import prepare
from xmkd.data.synthetic.synth import SynthOptions, synthesize
from xmkd.engine.trainer import Trainer
from xmkd.errors import XmkdConfigError
from xmkd.recipes import get_recipe
from xmkd.recipes.xmuda import log_class_weights

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


def config(domains, tmp_path, *extra, path="xmuda/synthetic_day_night.yaml"):
    recipe = get_recipe(peek_recipe(REPO / "configs" / path))
    return recipe, load_config(REPO / "configs" / path, [
        f"data.root={domains['day']}", f"target.root={domains['night']}", f"output_dir={tmp_path}",
        "data.train_split=mini_train", "target.train_split=mini_train", "target.val_split=mini_val",
        "data.num_workers=0", "data.image_size=[96,54]", "target.image_size=[96,54]",
        "model.backbone_2d=resnet18", "model.max_points=1500", *extra], schema=recipe.schema)


def test_uda_step_and_cross_modal_kl_targets_stay_detached(domains, tmp_path):
    recipe_cls, cfg = config(domains, tmp_path)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    w = recipe.weights.numpy()  # counted on the front-camera points: tests/test_ftd_parity.py
    assert w.min() == pytest.approx(1.0) and (w >= 1).all()
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


def test_source_only_and_target_only_recipes_train_without_the_unlabelled_target(domains, tmp_path):
    recipe_cls, cfg = config(domains, tmp_path, path="source_only/synthetic_day_night.yaml")
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    ds = recipe.train_dataset()
    batch = recipe.collate([ds[(0, 0)], ds[(0, 1)]])
    seen = []
    forward = recipe.forward
    recipe.forward = lambda b: seen.append(b) or forward(b)
    losses = recipe.training_step(batch, 0)
    assert set(losses) == {"seg_2d", "seg_3d"} and len(seen) == 1 and seen[0] is batch["source"]
    assert "target" not in batch  # not even loaded
    with pytest.raises(XmkdConfigError, match="lambda_xm_src"):
        recipe_cls(config(domains, tmp_path, "model.lambda_xm_src=1", path="source_only/synthetic_day_night.yaml")[1],
                   torch.device("cpu")).build()

    recipe_cls, cfg = config(domains, tmp_path, path="target_only/synthetic_day_night.yaml")
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()  # class weights and training frames from the (labelled) target
    night = recipe.front_camera_counts(cfg.target, "mini_train")
    day = recipe.front_camera_counts(cfg.data, "mini_train")
    assert np.allclose(recipe.weights.numpy(), log_class_weights(night)) and not np.allclose(night, day)
    assert Path(recipe.train_dataset().source.frames.reader.root) == domains["night"]
    assert set(recipe.training_step(recipe.collate([ds[(0, 0)]]), 0)) == {"seg_2d", "seg_3d"}


def test_short_day_to_night_run(domains, tmp_path):
    recipe, cfg = config(domains, tmp_path, "train.max_iters=4", "train.val_every=4", "train.ckpt_every=4")
    metrics = Trainer(cfg, recipe, progress=False).fit()
    assert {"miou_2d", "miou_3d", "miou_xm"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("miou_2d", "miou_3d", "miou_xm"))


def test_pseudo_label_refinement_on_a_hand_made_example():
    from xmkd.data.pseudo_labels import IGNORE, PseudoLabels, class_thresholds, refine

    prob = np.array([0.2, 0.5, 0.8, 0.95, 0.99, 0.3, 0.4])
    label = np.array([0, 0, 0, 0, 0, 1, 1])
    thr = class_thresholds(prob, label, 3)
    assert np.allclose(thr, [0.8, 0.35, 0.9])  # class 0: median 0.8; class 1: median 0.35; class 2: none -> cap
    assert refine(prob, label, thr).tolist() == [IGNORE, IGNORE, 0, 0, 0, IGNORE, 1]
    high = np.array([0.95, 0.97, 0.99])
    assert class_thresholds(high, np.zeros(3, int), 1)[0] == 0.9  # the cap
    pl = PseudoLabels(2)
    pl.add("f", 6, np.array([1, 3, 4]), np.array([0.9, 0.2, 0.8]), np.array([1, 1, 0]), np.ones(3), np.zeros(3))
    pl.finish()
    l2, l3 = pl.refined("f")
    assert l2.tolist() == [IGNORE, 1, IGNORE, IGNORE, 0, IGNORE] and l3.tolist() == [IGNORE, 0, IGNORE, 0, 0, IGNORE]


def test_ftd_step_ema_teachers_and_the_pseudo_label_round_trip(domains, tmp_path, capsys, monkeypatch):
    from xmkd.cli import main
    from xmkd.data.pseudo_labels import PseudoLabels

    recipe_cls = get_recipe("ftd")
    common = [f"data.root={domains['day']}", f"target.root={domains['night']}", f"output_dir={tmp_path}",
              "data.train_split=mini_train", "target.train_split=mini_train", "target.val_split=mini_val",
              "data.num_workers=0", "data.image_size=[96,54]", "target.image_size=[96,54]",
              "model.backbone_2d=resnet18", "model.max_points=1500"]
    cfg = load_config(REPO / "configs" / "ftd" / "synthetic_day_night.yaml", common, schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    assert set(recipe.emas()) == {"net2d", "net3d", "fusion"}
    ds = recipe.train_dataset()
    batch = recipe.collate([ds[(0, 0)], ds[(0, 1)]])
    styled, source = batch["styled"], batch["source"]
    assert len(styled["point_uv"]) == len(source["point_uv"])  # the stylised copy keeps every point
    assert not torch.equal(styled["images"], source["images"])
    losses = recipe.training_step(batch, 0)
    assert set(losses) == {"seg_2d", "seg_3d", "xm_src", "xm_trg", "cons"}
    sum(losses.values()).backward()
    assert all(p.grad is None for e in recipe.emas().values() for p in e.module.parameters())
    assert recipe.nets["fusion"]["mffm"].ea.expand.weight.grad.abs().sum() > 0
    assert recipe.nets["net2d"]["fused_head"].proj1.weight.grad.abs().sum() > 0  # in the 2D net, as released
    # train a few steps, pseudo-label the target, retrain with xDPL
    cfg = load_config(REPO / "configs" / "ftd" / "synthetic_day_night.yaml",
                      [*common, "name=stage1", "train.max_iters=2", "train.val_every=2", "train.ckpt_every=2"],
                      schema=recipe_cls.schema)
    Trainer(cfg, recipe_cls, progress=False).fit()
    out = tmp_path / "pl.npz"
    assert main(["pseudo-label", str(tmp_path / "stage1"), "--split", "mini_train", "--out", str(out), "--quiet",
                 "--workers", "0"]) == 0
    pl = PseudoLabels.load(out)
    assert len(pl.frames) == 2
    cfg = load_config(REPO / "configs" / "ftd" / "synthetic_day_night.yaml",
                      [*common, "name=stage2", "train.max_iters=2", "train.val_every=2", "train.ckpt_every=2",
                       "model.lambda_pl=1.0", f"model.pseudo_labels={out}"], schema=recipe_cls.schema)
    metrics = Trainer(cfg, recipe_cls, progress=False).fit()
    assert {"miou_2d", "miou_3d", "miou_xm"} <= set(metrics)
    rows = [r for r in (tmp_path / "stage2" / "metrics.jsonl").read_text().splitlines() if '"pl"' in r]
    assert rows  # the pseudo-label loss was part of training
    # `xmkd eval` loads the 2D, 3D and fusion weights together and prints the 2D / 3D / xM table
    assert main(["eval", str(tmp_path / "stage2"), "--json", str(tmp_path / "eval.json"), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert all(k in table for k in ("miou_2d", "miou_3d", "miou_xm"))
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    # the run's last checkpoint, as released (a UDA recipe; best.pt exists too), every net restored from it
    # (restore_nets refuses a missing one); the metrics are not compared with the training-time ones to the last
    # digit: after 2 iterations the logits are near ties and float summation order flips a few argmaxes between
    # the two evaluations
    assert (tmp_path / "stage2" / "checkpoints" / "best.pt").exists()
    assert set(evaluated) == {"last.pt"} and evaluated["last.pt"]["step"] == 2
    assert all(0 <= evaluated["last.pt"][k] <= 1 for k in ("miou_2d", "miou_3d", "miou_xm"))
    # so do `xmkd predict` and `xmkd pseudo-label` (load_trained)
    from xmkd.engine import checkpoint
    from xmkd.runs.predict import load_trained

    restored, restore = [], checkpoint.restore_nets
    monkeypatch.setattr(checkpoint, "restore_nets", lambda nets, path, *a: restored.append(Path(path).name) or
                        restore(nets, path, *a))
    load_trained(tmp_path / "stage2")
    assert restored == ["last.pt"]


def test_one_ssda_step(domains, tmp_path):
    recipe_cls, cfg = config(domains, tmp_path, "model.ssda_labelled_split=mini_val")
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    ds = recipe.train_dataset()
    batch = recipe.collate([ds[(0, 0)], ds[(0, 1)]])
    src = batch["source"]
    assert len(src["images"]) == 2  # one source frame and one labelled target frame (B / 2 each), one batch
    flags = src["from_target"]
    assert flags.any() and (~flags).any() and (src["labels"][flags] != 255).any()
    losses = recipe.training_step(batch, 0)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert recipe.nets["net3d"]["head"].main.weight.grad.abs().sum() > 0


def test_bottom_crop_moves_the_points_pixels_with_the_image(domains, tmp_path):
    recipe_cls, cfg = config(domains, tmp_path, "data.image_size=[]", "target.image_size=[]",
                             "model.bottom_crop=[64,40]", "model.hflip=false", "model.max_points=0",
                             "model.color_jitter=[]")
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    train = recipe.train_dataset()[(0, 1)]["source"]
    full = recipe.sample_maker("source")(recipe.frames_of(cfg.data, cfg.data.train_split)[1], None)
    assert train["image"].shape == (40, 64, 3) and full["image"].shape == (90, 160, 3)  # validation: whole image
    assert (train["uv"] >= 0).all() and (train["uv"][:, 0] < 64).all() and (train["uv"][:, 1] < 40).all()
    lefts = [x for x in range(160 - 64 + 1) if np.array_equal(full["image"][50:, x:x + 64], train["image"])]
    assert lefts
    at = {int(r): uv for r, uv in zip(full["raw"], full["uv"])}
    shifted = np.array([at[int(r)] for r in train["raw"]]) - [lefts[0], 50]
    assert len(train["raw"]) > 50 and np.allclose(shifted, train["uv"], atol=1e-4)
    batch = recipe.collate([recipe.train_dataset()[(0, 0)], recipe.train_dataset()[(0, 1)]])
    assert batch["source"]["images"].shape[-2:] == (40, 64)
    assert recipe.collate([full, recipe.train_dataset()[(0, 1)]["target"]])["images"].shape[-2:] == (90, 160)


def test_uda_agreement_tally_on_a_hand_made_example():
    from benchmarks.uda_agreement import rates, tally

    def one_hot(classes, conf):
        p = torch.full((len(classes), 3), (1 - conf) / 2)
        p[torch.arange(len(classes)), torch.tensor(classes)] = conf
        return p

    # points: both right, shared mistake, 2D right only, 3D right only, ignored
    labels = torch.tensor([0, 1, 2, 0, 255])
    p2 = one_hot([0, 0, 2, 1, 0], 0.9)
    p3 = one_hot([0, 0, 1, 0, 1], 0.6)
    counts = tally({"2d": p2, "3d": p3, "xm": (p2 + p3) / 2}, labels, 255)
    assert [counts[k] for k in ("n", "r2", "r3", "agree", "shared", "one")] == [4, 2, 2, 2, 1, 2]
    assert counts["fixed"] == 1  # the confident 2D wins both disagreements, right once
    r = rates(counts)
    assert r["xM fixes"] == 0.5 and r["conf right"] == pytest.approx(0.75) and r["conf wrong"] == pytest.approx(0.75)
    assert r["xM acc"] == pytest.approx(0.5)


def test_uda_agreement_where_counts_one_row_of_the_confusion_matrix():
    from benchmarks.uda_agreement import predicted_as

    labels = torch.tensor([2, 2, 2, 0, 255, 2])
    logits = torch.eye(3)[torch.tensor([0, 2, 0, 0, 2, 1])]  # the class-2 points go to 0, 2, 0 and 1
    counts = predicted_as({"2d": logits, "xm": logits.flip(1)}, labels, 2)
    assert counts["2d"].tolist() == [2, 1, 1]
    assert counts["xm"].tolist() == [1, 1, 2]  # flipped: 0 <-> 2


def test_point_heights_go_through_the_ego_pose_and_group_by_class():
    from benchmarks.point_heights import heights_by_class, summary
    from xmkd.data.frame import Frame

    pose = np.eye(4)
    pose[:3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]  # LiDAR x points down: global z = -x + 2
    pose[2, 3] = 2.0
    pts = np.array([[2, 5, 9, 0], [1, 0, 0, 0], [0, 0, 0, 0], [-1, 0, 0, 0]], np.float32)
    frame = Frame("f", pts, labels=np.array([0, 1, 1, 255]), ego_pose=pose)
    by_class = heights_by_class([frame, frame], 3)
    assert by_class[0].tolist() == [0.0, 0.0] and sorted(by_class[1].tolist()) == [1.0, 1.0, 2.0, 2.0]
    assert by_class[2].size == 0 and summary(by_class[1])[:2] == (4, 1.5) and summary(by_class[2])[0] == 0


def test_pl_quality_scores_pseudo_labels_against_the_targets_ground_truth(domains, tmp_path):
    from benchmarks.pl_quality import confusions, per_class, summary
    from xmkd.config import save_config
    from xmkd.data.labels import get_label_space
    from xmkd.data.pseudo_labels import IGNORE, PseudoLabels

    recipe_cls, cfg = config(domains, tmp_path)
    run = tmp_path / "run"
    save_config(cfg, run)
    frames = recipe_cls(cfg, torch.device("cpu")).frames("mini_train")
    c = get_label_space(cfg.target.label_space).num_classes
    pl = PseudoLabels(c)
    truth_counts = np.zeros(c, np.int64)
    for i in range(len(frames)):
        frame = frames[i]
        raw = np.arange(0, frame.num_points, 3)  # any subset of the points: the file names which
        truth = frame.labels[raw]
        valid = truth != IGNORE
        truth_counts += np.bincount(truth[valid], minlength=c)
        right = np.where(valid, truth, 0)
        # 2D: every label right and sure (kept); 3D: every label wrong and sure
        pl.add(frame.frame_id, frame.num_points, raw, np.ones(len(raw)), right, np.ones(len(raw)), (right + 1) % c)
    pl.finish()
    pl.save(tmp_path / "pl.npz")
    names, conf = confusions(tmp_path / "pl.npz", run, "mini_train")
    assert len(names) == c
    s2, s3 = summary(conf["2d"]), summary(conf["3d"])
    assert s2["points"] == s3["points"] == truth_counts.sum() > 0  # ignore-labelled points are not scored
    assert s2["kept"] == s2["acc_all"] == s2["acc_kept"] == s2["miou_kept"] == 1.0
    assert s3["kept"] == 1.0 and s3["acc_all"] == s3["acc_kept"] == s3["miou_kept"] == 0.0
    assert np.array_equal(conf["2d"]["kept"].sum(1), truth_counts)
    rows = per_class(conf["2d"])
    assert np.allclose(rows["gt share"], truth_counts / truth_counts.sum())
    assert np.allclose(rows["recall"][truth_counts > 0], 1.0)
    # a file made from another split is refused, naming the frame
    other = PseudoLabels(c)
    other.finish()
    other.save(tmp_path / "empty.npz")
    with pytest.raises(SystemExit, match="no pseudo-labels for frame"):
        confusions(tmp_path / "empty.npz", run, "mini_train")
    # the same frame ids with other point counts (another dataset's file), other classes, not a pseudo-label file
    shifted = PseudoLabels.load(tmp_path / "pl.npz")
    for f in shifted.frames.values():
        f["points"] = np.array(int(f["points"]) + 1)
    shifted.save(tmp_path / "shifted.npz")
    with pytest.raises(SystemExit, match="points in the file and"):
        confusions(tmp_path / "shifted.npz", run, "mini_train")
    wider = PseudoLabels(c + 1)
    wider.finish()
    wider.save(tmp_path / "wider.npz")
    with pytest.raises(SystemExit, match=f"{c + 1} classes"):
        confusions(tmp_path / "wider.npz", run, "mini_train")
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a pseudo-label file"):
        confusions(tmp_path / "notes.json", run, "mini_train")
    with pytest.raises(SystemExit, match="not a run directory"):
        confusions(tmp_path / "pl.npz", tmp_path / "nowhere", "mini_train")
    seg_cfg = load_config(REPO / "configs" / "lidar_seg" / "synthetic.yaml", [f"data.root={domains['day']}"],
                          schema=get_recipe("lidar_seg").schema)
    save_config(seg_cfg, tmp_path / "seg_run")
    with pytest.raises(SystemExit, match="no target domain"):
        confusions(tmp_path / "pl.npz", tmp_path / "seg_run", "mini_train")


def test_pl_quality_per_class_on_a_hand_made_confusion():
    from benchmarks.pl_quality import per_class, summary

    kept = np.array([[3, 1], [0, 4]])  # rows: ground truth, columns: kept label
    all_ = np.array([[5, 1], [2, 4]])
    s = summary({"all": all_, "kept": kept})
    assert s["points"] == 12 and s["kept"] == 8 / 12 and s["acc_all"] == 9 / 12 and s["acc_kept"] == 7 / 8
    assert np.isclose(s["miou_kept"], (3 / 4 + 4 / 5) / 2)
    rows = per_class({"all": all_, "kept": kept})
    assert np.allclose(rows["precision"], [1.0, 0.8]) and np.allclose(rows["recall"], [3 / 6, 4 / 6])
    assert np.allclose(rows["kept share"], [3 / 8, 5 / 8]) and np.allclose(rows["gt share"], [0.5, 0.5])
    # nothing kept: the kept accuracy and a never-kept class's precision are undefined (NaN, printed n/a)
    none = summary({"all": all_, "kept": np.zeros((2, 2), int)})
    assert none["kept"] == 0 and np.isnan(none["acc_kept"]) and np.isnan(none["miou_kept"])
    assert np.isnan(per_class({"all": all_, "kept": np.array([[3, 0], [1, 0]])})["precision"][1])


def test_uda_runs_are_evaluated_and_pseudo_labelled_from_their_last_checkpoint(tmp_path):
    from xmkd.engine.checkpoint import best_or_last
    from xmkd.errors import XmkdError

    (tmp_path / "checkpoints").mkdir()
    for name in ("best.pt", "last.pt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"")
    # the release tests and pseudo-labels from the last checkpoint (nothing selected on the validation split, which
    # its nuScenes configs share with the test split); the other recipes take the best
    for name in ("xmuda", "ftd", "bftd", "source_only", "target_only"):
        assert best_or_last(tmp_path, get_recipe(name).default_checkpoints).name == "last.pt", name
    assert best_or_last(tmp_path, get_recipe("lidar_seg").default_checkpoints).name == "best.pt"
    (tmp_path / "checkpoints" / "last.pt").unlink()
    with pytest.raises(XmkdError, match=r"checkpoints: no last.pt"):
        best_or_last(tmp_path, get_recipe("ftd").default_checkpoints)


def test_a_missing_dataset_root_or_imagenet_file_is_named(domains, tmp_path):
    from xmkd.errors import XmkdConfigError, XmkdError

    recipe_cls, cfg = config(domains, tmp_path, f"target.root={tmp_path / 'nite'}")
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    with pytest.raises(XmkdError, match=r"nite/xmkd_index: no index here \(.*nite does not exist: is the "
                                        r"dataset root or index in the config right\?\)"):
        recipe.train_dataset()
    recipe_cls, cfg = config(domains, tmp_path, f"model.pretrained_2d={tmp_path / 'resnet34.pth'}")
    with pytest.raises(XmkdConfigError, match=r"model.pretrained_2d: .*resnet34.pth: no such file \(an ImageNet"):
        recipe_cls(cfg, torch.device("cpu")).build()
