"""`lidar_det` (SECOND) end to end on a tiny synthetic KITTI-format set: it overfits two frames, `xmkd infer`
writes KITTI prediction files and `xmkd eval-kitti` scores them."""

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import read_write

from xmkd.cli import main
from xmkd.config import load_config, peek_recipe
from xmkd.data.gt_database import BoxDatabase
from xmkd.data.index import prepare
from xmkd.data.synthetic.synth import SynthOptions, synthesize_indexed
from xmkd.engine.trainer import Trainer
from xmkd.errors import XmkdConfigError
from xmkd.geometry.iou import bev_iou
from xmkd.recipes import get_recipe
from xmkd.runs.predict import load_trained

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    root = tmp_path_factory.mktemp("det") / "kitti"
    # the frames, their index and the box database lidar_det's gt-sampling reads (<root>/xmkd_gt_database)
    synthesize_indexed(SynthOptions(out=str(root), format="kitti", frames=4, frames_per_scene=2, unlabelled=2),
                       "kitti_object", progress=False)
    assert BoxDatabase.load(root / "xmkd_gt_database").names.size > 0
    prepare("kitti_raw", root, root / "xmkd_raw_index", progress=False)  # the two unlabelled raw frames
    return root


def test_second_overfits_two_frames_and_writes_kitti_predictions(kitti, tmp_path):
    recipe = get_recipe("lidar_det")
    cfg = load_config(REPO / "configs" / "lidar_det" / "synthetic.yaml", [
        f"data.root={kitti}", f"output_dir={tmp_path}", "name=second", "data.val_split=train", "data.num_workers=0",
        "train.max_iters=60", "train.val_every=60", "train.ckpt_every=60", "train.schedule.name=constant",
        "train.schedule.momentum=[]", "model.augment.flip=false", "model.augment.rotate=0.0",
        "model.augment.scale=[1.0,1.0]", "model.augment.gt_sampling.enabled=false"], schema=recipe.schema)
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
    # predicted (red) and ground-truth (green) boxes drawn on the image and in the bird's-eye view
    from PIL import Image

    fid = files[0].stem
    assert main(["viz", "kitti_object", "--root", str(kitti), "--frame", fid, "--pred", str(out), "--out",
                 str(tmp_path / "viz")]) == 0
    img = np.asarray(Image.open(tmp_path / "viz" / f"{fid}_image_2_boxes.png"))
    assert (img == [235, 40, 40]).all(-1).sum() > 50 and (img == [40, 220, 40]).all(-1).sum() > 50


def test_infer_refuses_a_segmentation_run(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("recipe: point_mlp\n")
    (tmp_path / "checkpoints").mkdir()
    assert main(["infer", str(tmp_path), "--split", "val", "--out", str(tmp_path / "o")]) == 1
    assert "does not predict boxes" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["lidar_det", "point_mlp"])
def test_predict_refuses_a_run_that_does_not_label_points(tmp_path, capsys, recipe):
    (tmp_path / "config.yaml").write_text(f"recipe: {recipe}\n")
    (tmp_path / "checkpoints").mkdir()
    assert main(["predict", str(tmp_path), "--split", "val", "--out", str(tmp_path / "o")]) == 1
    assert f"recipe {recipe!r} does not predict point labels (use `xmkd infer`" in capsys.readouterr().err


@pytest.fixture(scope="module")
def teacher_run(kitti, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    recipe = get_recipe("lidar_det")
    cfg = load_config(REPO / "configs" / "lidar_det" / "synthetic.yaml", [
        f"data.root={kitti}", f"output_dir={out}", "name=teacher", "data.num_workers=0", "train.max_iters=2",
        "train.val_every=2", "train.ckpt_every=2"], schema=recipe.schema)
    Trainer(cfg, recipe, progress=False).fit()
    return out / "teacher"


def hsrdn(kitti, tmp_path, *extra, config="hsrdn/synthetic.yaml"):
    import torch

    recipe_cls = get_recipe(peek_recipe(REPO / "configs" / config))
    cfg = load_config(REPO / "configs" / config, [
        f"data.root={kitti}", f"output_dir={tmp_path}", "data.num_workers=0", "data.image_size=[160,48]",
        "model.student.init=''", *extra], schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    return recipe


def test_hsrdn_losses_train_the_student_and_never_the_teacher(kitti, teacher_run, tmp_path):
    import torch

    ckpt = teacher_run / "checkpoints" / "last.pt"
    # xmkd's redesign: the relation terms train the student. A 2-iteration teacher scores no cell >= 0.1: relation
    # nodes from every cell here
    redesign = ("model.relation_gradient=true", "model.relation_score=0")
    recipe = hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", *redesign)
    teacher, student = recipe.nets["teacher"], recipe.nets["net"]
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    # the student's BEV backbone and head start from the teacher's
    assert torch.equal(student.bev.head.cls.weight, teacher.bev.head.cls.weight)
    ds = recipe.train_dataset()
    sample = ds[(0, 0)]
    assert (sample["depth"] > 0).sum() > 20  # projected LiDAR depth for the depth loss
    for batch_size in (1, 2):
        batch = recipe.collate([ds[(0, i)] for i in range(batch_size)])
        losses = recipe.training_step(batch, 0)
        assert {"bev", "distance", "angle", "resp_cls", "resp_box", "resp_dir", "depth"} <= set(losses)
        assert losses["distance"] > 0 and losses["angle"] > 0
        student.zero_grad()
        losses["distance"].backward(retain_graph=True)  # the relation terms alone reach the image backbone
        assert student.backbone.conv1.weight.grad.abs().sum() > 0
        sum(v for k, v in losses.items() if k != "distance").backward()
        assert all(p.grad is None for p in teacher.parameters())
    # as released (the default): the same relation values, logged, with no gradient to the student
    released = hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", "model.relation_score=0")
    assert not released.cfg.model.relation_gradient
    torch.manual_seed(0)  # the same dropout draws for both calls
    logged = released.training_step(batch, 0)
    with read_write(released.cfg):
        released.cfg.model.relation_gradient = True
        torch.manual_seed(0)
        trained = released.training_step(batch, 0)
        released.cfg.model.relation_gradient = False
    assert torch.allclose(logged["distance"], trained["distance"].detach()) and trained["distance"].requires_grad
    assert logged["distance"] > 0 and not logged["distance"].requires_grad and not logged["angle"].requires_grad
    assert logged["bev"].requires_grad
    with pytest.raises(XmkdConfigError, match="only the relation terms have a weight"):  # nothing else to train
        hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", "model.stage=bev", "model.weights.bev=0",
              "model.weights.depth=0")
    bev_stage = hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", "model.stage=bev", *redesign)
    batch = bev_stage.collate([bev_stage.train_dataset()[(0, 0)]])
    assert set(bev_stage.training_step(batch, 0)) == {"bev", "distance", "angle", "depth"}
    # the released cross-sample form (one node per sample, whole BEV maps): non-zero from a batch of 3, and with
    # the redesign's gradient it reaches the image backbone
    cross = hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", "model.relation_nodes=cross",
                  "model.relation_gradient=true")
    three = cross.collate([ds[(0, 0)], ds[(0, 1)], cross.val_dataset()[0]])
    losses = cross.training_step(three, 0)
    assert losses["distance"] > 0 and losses["angle"] > 0 and torch.isfinite(sum(losses.values()))
    cross.nets["net"].zero_grad()
    losses["angle"].backward()
    assert cross.nets["net"].backbone.conv1.weight.grad.abs().sum() > 0
    cmkd = hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", config="cmkd/synthetic.yaml")
    assert not {"distance", "angle"} & set(cmkd.training_step(batch, 0))
    with pytest.raises(XmkdConfigError, match="no relation losses"):
        hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", "model.weights.angle=1",
              config="cmkd/synthetic.yaml")
    with pytest.raises(XmkdConfigError, match="model.relation_floor: expected >= 0"):
        hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", "model.relation_floor=-0.1")


def test_hsrdn_trains_on_unlabelled_raw_frames_next_to_labelled_ones(kitti, teacher_run, tmp_path):
    import torch

    raw = [f"unlabelled.root={kitti}", f"unlabelled.index={kitti / 'xmkd_raw_index'}",
           "unlabelled.train_split=raw_unlabelled"]
    ckpt = f"model.teacher_checkpoint={teacher_run / 'checkpoints' / 'last.pt'}"
    recipe = hsrdn(kitti, tmp_path, ckpt, "model.weights.gt=1", "model.redraw_empty=true", *raw)
    ds = recipe.train_dataset()
    n = len((kitti / "ImageSets" / "train.txt").read_text().split())
    assert len(ds) == n + 2
    # a boxless labelled scene is replaced from labelled and raw frames together, as in the release's one dataset
    assert ds.redraw is not None and ds.parts[0].redraw is None and ds.parts[1].redraw is None
    labelled, unlabelled = ds[(0, 0)], ds[(0, n + 1)]
    assert labelled["labelled"] and not unlabelled["labelled"] and len(unlabelled["boxes"]) == 0
    assert unlabelled["image"].shape == labelled["image"].shape and (unlabelled["depth"] > 0).sum() > 20
    losses = recipe.training_step(recipe.collate([labelled, unlabelled]), 0)
    assert {"bev", "resp_cls", "depth", "distance", "gt_cls"} <= set(losses)
    assert losses["gt_cls"] > 0 and all(torch.isfinite(v) for v in losses.values())
    only_raw = recipe.training_step(recipe.collate([unlabelled]), 0)  # no ground truth: the GT terms are zero
    assert only_raw["gt_cls"] == 0 and only_raw["gt_box"] == 0 and only_raw["resp_cls"] > 0
    with pytest.raises(XmkdConfigError, match="unlabelled.root"):  # the GT-only student cannot use them
        hsrdn(kitti, tmp_path, "model.teacher_checkpoint=''", "model.weights.bev=0", "model.weights.response_cls=0",
              "model.weights.response_box=0", "model.weights.response_dir=0", "model.weights.distance=0",
              "model.weights.angle=0", "model.weights.depth=0", "model.weights.gt=1", *raw)
    teacher = get_recipe("lidar_det")(recipe.cfg, torch.device("cpu"))
    teacher.build()
    with pytest.raises(ValueError, match="labelled frames only"):
        teacher.training_step(teacher.collate([unlabelled]), 0)


def test_student_run_then_kitti_evaluation(kitti, teacher_run, tmp_path):
    recipe = get_recipe("hsrdn")
    cfg = load_config(REPO / "configs" / "hsrdn" / "synthetic.yaml", [
        f"data.root={kitti}", f"output_dir={tmp_path}", "name=student", "data.num_workers=0",
        "data.image_size=[160,48]", f"model.teacher_checkpoint={teacher_run / 'checkpoints' / 'last.pt'}",
        "model.student.init=''", "train.max_iters=2", "train.val_every=2", "train.ckpt_every=2"], schema=recipe.schema)
    metrics = Trainer(cfg, recipe, progress=False).fit()
    assert "car_3d_r40_moderate" in metrics
    out = tmp_path / "pred"
    assert main(["infer", str(tmp_path / "student"), "--split", "val", "--out", str(out), "--quiet",
                 "--workers", "0"]) == 0
    assert main(["eval-kitti", "--gt", str(kitti / "training" / "label_2"), "--pred", str(out), "--split",
                 str(kitti / "ImageSets" / "val.txt")]) == 0


def test_ground_truth_baseline_needs_no_teacher_and_distillation_does(kitti, tmp_path):
    base = hsrdn(kitti, tmp_path, "model.teacher_checkpoint=''", "model.weights.bev=0", "model.weights.response_cls=0",
                 "model.weights.response_box=0", "model.weights.response_dir=0", "model.weights.distance=0",
                 "model.weights.angle=0", "model.weights.gt=1")
    assert "teacher" not in base.nets
    losses = base.training_step(base.collate([base.train_dataset()[(0, 0)]]), 0)
    assert {"gt_cls", "gt_box", "gt_dir", "depth"} == set(losses)
    with pytest.raises(XmkdConfigError, match="teacher_checkpoint"):
        hsrdn(kitti, tmp_path, "model.teacher_checkpoint=''")


def test_bev_stage_leaves_the_head_alone_and_the_det_stage_starts_from_it(kitti, teacher_run, tmp_path):
    import torch

    from xmkd.engine.checkpoint import load

    recipe_cls = get_recipe("hsrdn")
    teacher_ckpt = teacher_run / "checkpoints" / "last.pt"
    common = [f"data.root={kitti}", f"output_dir={tmp_path}", "data.num_workers=0", "data.image_size=[160,48]",
              f"model.teacher_checkpoint={teacher_ckpt}", "model.relation_score=0", "train.max_iters=2",
              "train.val_every=2", "train.ckpt_every=2"]
    configs = REPO / "configs" / "hsrdn"
    trainer = Trainer(load_config(configs / "synthetic_bev.yaml", [*common, "name=bev"], schema=recipe_cls.schema),
                      recipe_cls, progress=False)
    student = trainer.recipe.nets["net"]
    # the release's AdamW (betas 0.9 / 0.999) under OneCycleLR, whose beta1 starts at MAX_MOM 0.95
    assert all(g["betas"] == (0.95, 0.999) for o in trainer.optimizers.values() for g in o.param_groups)
    before = {k: v.clone() for k, v in student.state_dict().items()}

    def head_in_eval_mode_after_train() -> bool:  # MonoDetector.train keeps the frozen head in eval mode
        student.train()
        rest = [m for name, m in student.named_modules() if name and not name.startswith("bev")]
        return all(m.training for m in rest) and not any(m.training for m in student.bev.modules())

    assert head_in_eval_mode_after_train()
    metrics = trainer.fit()
    assert "car_3d_r40_moderate" in metrics  # the BEV stage validates the teacher's head on the student's features
    assert head_in_eval_mode_after_train()
    bev_run = tmp_path / "bev" / "checkpoints" / "last.pt"
    after = load(bev_run)["models"]["net"]
    head = [k for k in before if k.startswith("bev.")]
    assert any(k.endswith("running_mean") for k in head) and any(k.endswith("num_batches_tracked") for k in head)
    assert all(torch.equal(after[k], before[k]) for k in head)  # every weight and BatchNorm buffer of the head
    moved = {k for k in before if not k.startswith("bev.") and not torch.equal(after[k], before[k])}
    assert "collapse.1.running_mean" in moved and "backbone.conv1.weight" in moved and "scnet.0.conv3.weight" in moved

    def built(config: str, *extra: str):
        recipe = recipe_cls(load_config(configs / config, [*common, *extra], schema=recipe_cls.schema),
                            torch.device("cpu"))
        recipe.build()
        recipe.nets["teacher"].eval()
        return recipe

    det = built("synthetic.yaml", "name=det", f"model.student.init={bev_run}")
    bev = built("synthetic_bev.yaml", "name=bev_again", f"model.student.init={bev_run}")
    fresh = built("synthetic.yaml", "name=fresh", "model.student.init=''")
    teacher_head = det.nets["teacher"].bev.state_dict()
    assert all(torch.equal(v, teacher_head[k]) for k, v in det.nets["net"].bev.state_dict().items())
    assert det.nets["net"].bev.head.cls.weight.requires_grad and not bev.nets["net"].bev.head.cls.weight.requires_grad
    assert det.nets["net"].train().bev.head.training and not bev.nets["net"].train().bev.head.training
    batch = det.collate([det.val_dataset()[(0, i)] for i in range(2)])

    def imitation(recipe) -> torch.Tensor:
        torch.manual_seed(0)  # the ASPP's dropout draws the same mask in both
        return recipe.training_step(batch, 0)["bev"]

    assert torch.isclose(imitation(det), imitation(bev), rtol=1e-6)  # the BEV run's student, exactly
    assert not torch.isclose(imitation(fresh), imitation(det), rtol=1e-3)
    assert {"resp_cls", "resp_box", "resp_dir"} <= set(det.training_step(batch, 0))
    with pytest.raises(XmkdConfigError, match="voxel_size: 0.1, but the teacher"):
        built("synthetic.yaml", "name=x", "model.student.init=''", "data.voxel_size=0.1")
    with pytest.raises(XmkdConfigError, match="image_pretrained: .* an xmkd run checkpoint"):
        built("synthetic.yaml", "name=x", "model.student.init=''", f"model.student.image_pretrained={bev_run}")


def test_hsrdn_benchmark_counts_valid_boxes_as_the_evaluator_and_pairs_seeds(kitti):
    from benchmarks.bench_hsrdn import ceilings, paired, valid_moderate

    counts = valid_moderate(kitti)
    by_hand = {"Car": 0, "Pedestrian": 0, "Cyclist": 0}
    for fid in (kitti / "ImageSets" / "val.txt").read_text().split():
        for line in (kitti / "training" / "label_2" / f"{fid}.txt").read_text().splitlines():
            f = line.split()
            if f[0] in by_hand and float(f[1]) <= 0.3 and int(f[2]) <= 1 and float(f[7]) - float(f[5]) > 25:
                by_hand[f[0]] += 1
    assert counts == by_hand
    ceiling = ceilings(kitti)
    for cls, n in counts.items():  # below 41 valid boxes the 41-point sampling caps R40 at (n - 1) / 40
        assert ceiling[f"{cls}/R40"] <= 100 * max(n - 1, 0) / 40 + 1e-6
    assert paired([3.0, 5.0, 4.0], [1.0, 2.0, 3.0]) == "+2.0 / +3.0 / +1.0; +2.00 ± 1.00, 95 % CI [-0.5, +4.5]"
    nan = float("nan")  # `--report`: a seed whose row has not finished drops out of the pairs
    assert paired([3.0, nan, 4.0], [1.0, 2.0, 3.0]) == "+2.0 / n/a / +1.0; +1.50 ± 0.71, 95 % CI [-4.9, +7.9]"
    assert paired([nan], [1.0]) == "n/a (not measured)"


def test_hsrdn_benchmark_report_tabulates_the_finished_runs_only(tmp_path, monkeypatch, capsys):
    import json

    import benchmarks.bench_hsrdn as bench

    monkeypatch.setattr(bench, "OUT", tmp_path)
    steps = (4, 2, 3)
    data = {"valid_moderate": {"Car": 50, "Pedestrian": 41, "Cyclist": 12},
            "ceiling": {f"{c}/{r}": 100.0 for c in ("Car", "Pedestrian", "Cyclist") for r in ("R40", "R11")},
            "positive_anchors": {"Car": 3.0}}

    def logged(run, step, kind="val", ap=0.0):
        (tmp_path / "seed0" / "runs" / run).mkdir(parents=True, exist_ok=True)
        with open(tmp_path / "seed0" / "runs" / run / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "kind": kind, "car_3d_r40_moderate_loose": ap}) + "\n")

    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "data.json").write_text(json.dumps(data))
    logged("teacher", 4, ap=90.0)
    logged("mono_gt_bev", 2)
    logged("mono_gt", 3, ap=12.5)
    logged("cmkd_bev", 2)
    logged("cmkd", 2, kind="train")  # still training: not a finished row
    logged("cmkd", 1, ap=50.0)  # an earlier validation is not the result
    logged("hsrdn", 300, ap=7.0)  # a run of another length (its config says so): neither its row nor its curve
    logged("hsrdn_grad32_bev", 2)
    logged("hsrdn_grad32", 3, ap=9.0)
    # a finished run in the folder of the relation-gradient row whose relation terms were only logged: not its run
    (tmp_path / "seed0" / "runs" / "hsrdn_grad32" / "config.yaml").write_text(
        "recipe: hsrdn\ntrain: {max_iters: 3}\nmodel: {relation_gradient: false}\n")
    (tmp_path / "seed0" / "runs" / "hsrdn" / "config.yaml").write_text("recipe: hsrdn\ntrain: {max_iters: 300}\n")
    bench.main(seeds=(0, 1), steps=steps, report=True)  # seed 1 has no data part yet: left out
    out = capsys.readouterr().out
    assert "mean ± std (ddof 0) over seeds 0 (" in out and "| student, GT only | " in out
    tables, curves = out.split("Detection stage, Car 3D loose at each validation")
    assert "12.5" in tables and "50.0" not in tables and "| CMKD | not measured |" in tables
    assert "; oracle-depth student, bin histogram − CMKD n/a (not measured)" in tables  # the upper bound as well
    assert "| oracle-depth student |" not in tables  # the one-hot oracle: an optional row
    assert "bin histogram − oracle-depth student" not in tables  # paired with the histogram one only when shown
    assert "Not finished: seed 0: CMKD; seed 0: HSRDN; seed 0: oracle-depth student, bin histogram" in out
    assert "Pedestrian" in out and "**Cyclist**" not in out  # 12 valid boxes: not reported
    assert "7.0" not in out and "- HSRDN: n/a\n" in curves
    assert not (tmp_path / "seed0" / "runs" / "oracle_hist").exists()  # no training
    assert not (tmp_path / "seed1").exists()
    assert "- student, GT only: 3: 12.5\n" in curves and "- CMKD: 1: 50.0\n" in curves  # so far
    assert "relation" not in out  # a variant row shows only once one of its runs has finished
    logged("cmkd", 3, ap=20.0)
    logged("hsrdn_grad1", 3, ap=26.5)
    bench.main(seeds=(0,), steps=steps, report=True, rows=("cmkd", "hsrdn_grad1"))
    out = capsys.readouterr().out
    assert "| HSRDN, relation gradient, weights 1 | " in out and "| HSRDN, relation weights 0 |" not in out
    assert "HSRDN, relation gradient, weights 1 − CMKD +6.5 (one seed)" in out
    logged("oracle", 3, ap=10.0)
    logged("oracle_hist", 3, ap=35.0)
    bench.main(seeds=(0,), steps=steps, report=True, rows=("cmkd", "oracle", "oracle_hist"))
    out = capsys.readouterr().out  # the histogram oracle against CMKD and against the one-hot oracle
    assert "oracle-depth student, bin histogram − CMKD +15.0 (one seed)" in out
    assert "oracle-depth student − CMKD -10.0 (one seed)" in out
    assert "oracle-depth student, bin histogram − oracle-depth student +25.0 (one seed)" in out
    assert "Not finished:" not in out  # only the rows asked for count as missing
    with pytest.raises(SystemExit, match="unknown hsrdn_rel2"):
        bench.main(seeds=(0,), steps=steps, report=True, rows=("hsrdn_rel2",))
    for bad in (("cmkd", "teacher"), "cmkd"):  # checked before the world is synthesised
        with pytest.raises(ValueError, match="rows: a sequence of mono_gt, cmkd"):
            bench.run_seed(7, steps, rows=bad)
    assert not (tmp_path / "seed7").exists()


def test_lidar_only_training_needs_no_camera_and_the_error_says_which_and_why(kitti, tmp_path, capsys):
    import torch

    from xmkd.errors import XmkdError

    index = tmp_path / "index_lidar_only"
    prepare("kitti_object", kitti, index, progress=False, cameras=[])
    recipe_cls = get_recipe("lidar_det")
    overrides = [f"data.root={kitti}", f"data.index={index}", "data.cameras=[]", f"output_dir={tmp_path / 'runs'}",
                 "name=x", "data.num_workers=0", "model.augment.gt_sampling.enabled=false"]

    def recipe(*extra):
        cfg = load_config(REPO / "configs" / "lidar_det" / "synthetic.yaml", [*overrides, *extra],
                          schema=recipe_cls.schema)
        made = recipe_cls(cfg, torch.device("cpu"))
        made.build()
        return made

    # model.fov_only=false: the training frames load and make samples without any camera
    samples = recipe("model.fov_only=false").train_dataset()
    sample = samples[(0, 0)]
    assert len(sample["xyz"]) > 0 and sample["meta"]["K"] is None
    # validation still projects the boxes into image_2 (KITTI prediction files): that is what the error names
    with pytest.raises(XmkdError, match=r"cameras \['image_2'\] were not prepared \(lidar_det needs camera 'image_2': "
                                        r"validation and `xmkd infer` write KITTI prediction files"):
        recipe("model.fov_only=false").val_dataset()
    with pytest.raises(XmkdError, match=r"needs camera 'image_2': model.fov_only=true keeps only the points inside"):
        recipe().train_dataset()
    assert main(["train", "lidar_det/synthetic", *overrides, "model.fov_only=false", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "validation and `xmkd infer` write KITTI prediction files" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_training_scene_left_without_boxes_is_drawn_again_as_released(kitti, tmp_path):
    import torch

    from xmkd.data.dataset import ConcatSamples, FrameSamples
    from xmkd.errors import XmkdDataError
    from xmkd.recipes.lidar_det import left_without_boxes

    def make(frame, rng):
        boxes = np.zeros((0 if frame in ("empty", "raw") else 1, 7))
        draw = None if rng is None else rng.random()
        return {"frame": frame, "labelled": frame != "raw", "boxes": boxes, "draw": draw}

    frames = ["a", "empty", "b"]
    ds = FrameSamples(frames, make, 0, train=True, redraw=left_without_boxes)
    drawn = [ds[(e, 1)] for e in range(30)]
    assert {s["frame"] for s in drawn} == {"a", "b"}  # a random other frame, as OpenPCDet's prepare_data
    assert ds[(5, 1)]["draw"] == drawn[5]["draw"]  # fixed by the seed, epoch and index
    assert drawn[5]["draw"] != ds[(5, frames.index(drawn[5]["frame"]))]["draw"]  # with augmentation of its own
    assert ds[(0, 0)]["draw"] == FrameSamples(frames, make, 0, train=True)[(0, 0)]["draw"]  # others: unchanged
    assert FrameSamples(frames, make, 0, train=True)[(0, 1)]["frame"] == "empty"  # model.redraw_empty=false
    assert FrameSamples(frames, make, 0, train=False, redraw=left_without_boxes)[1]["frame"] == "empty"  # validation
    # labelled and raw frames in one set (CMKD's setting): the replacement comes from all of them, and a raw frame
    # (no labels, no boxes) is never replaced
    mixed = ConcatSamples([FrameSamples(["empty"], make, 0, True), FrameSamples(["raw"], make, 1, True)],
                          left_without_boxes, 0)
    assert mixed[(0, 0)]["frame"] == "raw" and mixed[(0, 1)]["frame"] == "raw"
    with pytest.raises(XmkdDataError, match="redraw_empty=false"):
        FrameSamples(["empty"], make, 0, train=True, redraw=left_without_boxes)[(0, 0)]
    # the teacher recipe: a range behind the car holds no box, so every scene is left without boxes
    recipe_cls = get_recipe("lidar_det")

    def teacher(*extra):
        cfg = load_config(REPO / "configs" / "lidar_det" / "synthetic.yaml", [
            f"data.root={kitti}", f"output_dir={tmp_path}", "data.num_workers=0",
            "data.point_range=[-3.2,-0.8,-3,-1.6,0.8,1]", "model.augment.gt_sampling.enabled=false", *extra],
            schema=recipe_cls.schema)
        made = recipe_cls(cfg, torch.device("cpu"))
        made.build()
        return made.train_dataset()

    kept = teacher("model.redraw_empty=false")
    assert kept.redraw is None and len(kept[(0, 0)]["boxes"]) == 0
    # the schema's default and the KITTI teacher redraw, as released (the synthetic config pins it off: its
    # benchmark runs were saved before the key existed)
    from xmkd.recipes.lidar_det import LidarDetModel
    assert LidarDetModel().redraw_empty is True and teacher().redraw is None
    assert load_config(REPO / "configs" / "lidar_det" / "kitti.yaml", schema=recipe_cls.schema).model.redraw_empty
    assert teacher("model.redraw_empty=true").redraw is left_without_boxes and left_without_boxes(kept[(0, 0)])


def test_the_students_teacher_voxels_are_capped_as_the_distillation_configs_cap_them(kitti, tmp_path):
    import torch

    from xmkd.recipes.lidar_det import LidarDetRecipe

    recipe_cls = get_recipe("hsrdn")
    cfg = load_config(REPO / "configs" / "hsrdn" / "synthetic_bev.yaml", [
        f"data.root={kitti}", f"output_dir={tmp_path}", "data.num_workers=0", "model.max_voxels=[50,60]",
        "model.image_flip=false"], schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    frame = recipe.frames("train", training=True)[0]
    lo, size = np.asarray(cfg.data.point_range[:3]), np.asarray(recipe.voxel)

    def voxels(sample) -> int:
        return len(np.unique(np.floor((sample["xyz"] - lo) / size).astype(np.int64), axis=0))

    train, val = recipe.make_sample(frame, np.random.default_rng(0)), recipe.make_sample(frame, None)
    assert voxels(train) == 50 and voxels(val) == 60  # model.max_voxels [training, evaluation]
    # as released, the points are not shuffled before the cap (no shuffle_points in the distillation configs)
    assert np.array_equal(train["xyz"], LidarDetRecipe.make_sample(recipe, frame, None, max_voxels=50)["xyz"])
    # the defaults: the distillation configs' 16,000 / 40,000, the teacher's own 20,000 / 40,000
    assert list(recipe_cls.schema().model.max_voxels) == [16000, 40000]
    assert list(get_recipe("lidar_det").schema().model.max_voxels) == [20000, 40000]
    for config in ("lidar_det/synthetic.yaml", "hsrdn/synthetic_bev.yaml"):  # not "no limit", as a voxel cap: no box
        name = config.split("/")[0]
        cfg = load_config(REPO / "configs" / config, [f"data.root={kitti}", f"output_dir={tmp_path}",
                                                      "model.max_detections=0"], schema=get_recipe(name).schema)
        with pytest.raises(XmkdConfigError, match="model.max_detections: boxes kept per frame, at least 1; got 0"):
            get_recipe(name)(cfg, torch.device("cpu")).build()


def test_depth_targets_from_depth_2_maps_are_the_releases_sparse_average_pooling(kitti, tmp_path):
    import shutil

    import torch
    from PIL import Image

    from xmkd.data.readers.kitti_object import read_kitti_object_frame
    from xmkd.errors import XmkdDataError
    from xmkd.models.det.mono import output_stride

    root, fid = tmp_path / "kitti", (kitti / "ImageSets" / "train.txt").read_text().split()[0]
    for sub, ext in (("velodyne", "bin"), ("image_2", "png"), ("calib", "txt"), ("label_2", "txt")):
        (root / "training" / sub).mkdir(parents=True)
        shutil.copy(kitti / "training" / sub / f"{fid}.{ext}", root / "training" / sub / f"{fid}.{ext}")
    plain = read_kitti_object_frame(root, fid, cameras=["image_2"])
    w, h = plain.cameras["image_2"].image_size
    g = np.random.default_rng(0)
    raw = np.where(g.random((h, w)) < 0.3, g.integers(3 * 256, 60 * 256, (h, w)), 0).astype(np.uint16)
    (root / "training" / "depth_2").mkdir()
    Image.fromarray(raw).save(root / "training" / "depth_2" / f"{fid}.png")  # 16-bit, metres x 256 (KITTI's format)
    frame = read_kitti_object_frame(root, fid, cameras=["image_2"], depth_maps=True)
    metres = raw.astype(np.float32) / 256
    assert plain.cameras["image_2"].depth is None and np.array_equal(frame.cameras["image_2"].depth, metres)
    assert read_kitti_object_frame(root, fid, cameras=["image_2"]).cameras["image_2"].depth is None  # not asked
    recipe_cls = get_recipe("hsrdn")
    cfg = load_config(REPO / "configs" / "hsrdn" / "synthetic_bev.yaml", [
        f"data.root={root}", f"output_dir={tmp_path}", "data.image_size=[]", "model.depth_maps=depth_2"],
        schema=recipe_cls.schema)
    recipe, stride = recipe_cls(cfg, torch.device("cpu")), output_stride(cfg.model.student)

    def pooled(depth: np.ndarray) -> np.ndarray:  # data_processor_cmkd.py sparse_avg_pooling (skimage, zero padding)
        ph, pw = -(-h // stride) * stride, -(-w // stride) * stride
        blocks = np.pad(depth, ((0, ph - h), (0, pw - w))).reshape(ph // stride, stride, pw // stride, stride)
        return blocks.sum((1, 3)) / ((blocks != 0).sum((1, 3)) + 1e-10)

    assert np.allclose(recipe.make_sample(frame, None)["depth"], pooled(metres), rtol=1e-6)
    flip = next(np.random.default_rng(s) for s in range(10) if np.random.default_rng(s).random() < 0.5)
    assert np.allclose(recipe.make_sample(frame, flip)["depth"], pooled(metres[:, ::-1]), rtol=1e-6)  # np.fliplr
    # a training frame without its map is an error; evaluation reads no targets
    with pytest.raises(XmkdDataError, match=r"depth_maps=depth_2, but camera 'image_2' of frame .* no depth map"):
        recipe.make_sample(plain, np.random.default_rng(0))
    assert not recipe.make_sample(plain, None)["depth"].any()
    path = root / "training" / "depth_2" / f"{fid}.png"
    path.write_bytes(b"")
    with pytest.raises(XmkdDataError, match="depth_2"):
        read_kitti_object_frame(root, fid, cameras=["image_2"], depth_maps=True)
    Image.fromarray(raw[:, :-8]).save(path)
    with pytest.raises(XmkdDataError, match=rf"a {w - 8}x{h} depth map for a {w}x{h} image"):
        read_kitti_object_frame(root, fid, cameras=["image_2"], depth_maps=True)
    # 16-bit grayscale PNG only: a 32-bit image (a TIFF named .png) would give depths of kilometres
    Image.fromarray(raw.astype(np.int32) * 60).save(path, format="TIFF")
    with pytest.raises(XmkdDataError, match=r"a TIFF image of mode I; expected a 16-bit grayscale PNG"):
        read_kitti_object_frame(root, fid, cameras=["image_2"], depth_maps=True)


def test_histogram_oracle_samples_carry_each_cells_depth_bin_shares(kitti, tmp_path):
    import torch

    from xmkd.errors import XmkdConfigError
    from xmkd.models.det.frustum import lid_to_depth

    recipe_cls = get_recipe("cmkd")
    overrides = [f"data.root={kitti}", f"output_dir={tmp_path}", "model.teacher_checkpoint=''"]
    cfg = load_config(REPO / "configs" / "cmkd" / "oracle_hist_synthetic_bev.yaml", overrides, schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    frame = recipe.frames_of(cfg.data, cfg.data.train_split)[0]
    sample = recipe.make_sample(frame, None)
    shares, depth, st = sample["depth_shares"], sample["depth"], cfg.model.student
    assert shares.shape == (st.depth_bins + 1, *depth.shape)
    # every cell with a LiDAR pixel shares 1 among the bins, a cell without one lifts nothing
    assert np.allclose(shares.sum(0), depth > 0, atol=1e-6) and (depth > 0).sum() > 20
    # the cell's mean depth (the one-hot oracle's target; the same depth-image pixels) lies between the shares' means
    # of the bins' lower and upper edges (LID bin i spans [lid_to_depth(i), lid_to_depth(i + 1)))
    inside = (depth > 0) & (shares[-1] == 0)
    edges = lid_to_depth(torch.arange(st.depth_bins + 1, dtype=torch.float32), st.depth_min, st.depth_max,
                         st.depth_bins).numpy()
    low, high = np.einsum("dhw,d->hw", shares[:-1], edges[:-1]), np.einsum("dhw,d->hw", shares[:-1], edges[1:])
    assert inside.sum() > 20 and (low[inside] <= depth[inside] + 1e-4).all() and (depth[inside] < high[inside]).all()
    batch = recipe.collate([sample, sample])
    assert batch["depth_shares"].shape == (2, st.depth_bins + 1, *depth.shape)  # what the model reads
    one_hot = get_recipe("cmkd")(load_config(REPO / "configs" / "cmkd" / "oracle_depth_synthetic_bev.yaml", overrides,
                                             schema=recipe_cls.schema), torch.device("cpu"))
    assert "depth_shares" not in one_hot.make_sample(frame, None)
    # the histogram is read by an oracle only: elsewhere the key would do nothing, so it is refused
    cfg = load_config(REPO / "configs" / "cmkd" / "synthetic_bev.yaml",
                      [*overrides, "model.student.oracle_bins=histogram"], schema=recipe_cls.schema)
    with pytest.raises(XmkdConfigError, match="model.student.oracle_bins: 'histogram' is read by an oracle-depth"):
        recipe_cls(cfg, torch.device("cpu")).build()


def test_depth_2_maps_are_read_only_where_a_recipe_reads_them(kitti, tmp_path):
    import shutil

    import torch
    from PIL import Image

    from xmkd.errors import XmkdDataError

    root, fid = tmp_path / "kitti", (kitti / "ImageSets" / "train.txt").read_text().split()[0]
    for sub, ext in (("velodyne", "bin"), ("image_2", "png"), ("calib", "txt"), ("label_2", "txt")):
        (root / "training" / sub).mkdir(parents=True)
        shutil.copy(kitti / "training" / sub / f"{fid}.{ext}", root / "training" / sub / f"{fid}.{ext}")
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text(f"{fid}\n")
    prepare("kitti_object", root, root / "xmkd_index", progress=False)
    (root / "training" / "depth_2").mkdir()
    Image.new("L", (8, 8)).save(root / "training" / "depth_2" / f"{fid}.png")  # a bad map (8-bit, wrong size)

    def first_frame(recipe_name, config, *overrides, training=True):
        recipe_cls = get_recipe(recipe_name)
        cfg = load_config(REPO / "configs" / config, [f"data.root={root}", f"output_dir={tmp_path}",
                                                      "data.image_size=[]", *overrides], schema=recipe_cls.schema)
        return recipe_cls(cfg, torch.device("cpu")).frames_of(cfg.data, "train", training)[0]

    # recipes that never read the maps neither fail on a bad one nor read it
    assert first_frame("lidar_det", "lidar_det/synthetic.yaml").cameras["image_2"].depth is None
    assert first_frame("hsrdn", "hsrdn/synthetic_bev.yaml", "model.depth_maps=lidar").cameras["image_2"].depth is None
    assert first_frame("hsrdn", "hsrdn/synthetic_bev.yaml", "model.depth_maps=depth_2", training=False
                       ).cameras["image_2"].depth is None  # evaluation reads no depth targets
    with pytest.raises(XmkdDataError, match=r"depth_2/\d+.png.*expected a 16-bit grayscale PNG"):
        first_frame("hsrdn", "hsrdn/synthetic_bev.yaml", "model.depth_maps=depth_2")
    (root / "training" / "depth_2" / f"{fid}.png").unlink()  # a missing map: the error names the file expected
    with pytest.raises(XmkdDataError, match=rf"{root / 'training' / 'depth_2' / fid}.png.*depth map file is missing"):
        first_frame("hsrdn", "hsrdn/synthetic_bev.yaml", "model.depth_maps=depth_2")


def test_oracle_cells_measures_the_lifted_cells_of_the_validation_frames(kitti):
    from benchmarks.hsrdn_oracle_cells import box_cells, oracle_cells
    from xmkd.geometry.boxes import box_corners

    box = np.array([10.0, 2.0, -1.0, 4.0, 2.0, 1.5, np.pi / 2])  # turned 90°: its length along y
    corners = box_corners(box[None])[0]
    assert np.allclose(corners.min(0), [9.0, 0.0, -1.75]) and np.allclose(corners.max(0), [11.0, 4.0, -0.25])
    # a camera at the LiDAR origin looking along x (u right = -y, v down = -z), f = 100 px, centre (160, 48)
    P = np.array([[160.0, -100, 0, 0], [48, 0, -100, 0], [1, 0, 0, 0]])
    rows, cols, z = box_cells(box, P, 8.0, (12, 40))
    # u from 160 - 100 * 4 / 9 = 115.6 to 160 - 0 = 160 -> cells 14..20; v from 48 + 100 * 0.25 / 11 = 50.3 to
    # 48 + 100 * 1.75 / 9 = 67.4 -> cells 6..9; depths 9 to 11 m
    assert (rows, cols) == (slice(6, 9), slice(14, 20)) and np.allclose([z.min(), z.max()], [9.0, 11.0])
    assert box_cells(box * [-1, 1, 1, 1, 1, 1, 1], P, 8.0, (12, 40)) is None  # behind the camera
    r = oracle_cells(str(kitti), every=1)
    assert r["car_cell_count"] > 0 and 0.5 < r["cells"] <= 1.0 and 0.5 < r["car_cells"] <= 1.0
    assert 0.0 <= r["car_off_2m"] <= r["car_off"] <= 1.0


def test_hsrdn_names_the_key_of_a_missing_or_wrong_checkpoint(kitti, teacher_run, tmp_path):
    from xmkd.errors import XmkdConfigError

    ckpt = teacher_run / "checkpoints" / "last.pt"
    with pytest.raises(XmkdConfigError, match=r"model.student.init: .*nope.pt: no such checkpoint; the detection "
                                              r"stage starts from a BEV-stage run of this student: train the \*_bev"):
        hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", f"model.student.init={tmp_path / 'nope.pt'}")
    with pytest.raises(XmkdConfigError, match=r"model.student.init: .*last.pt is a checkpoint of a lidar_det run; "
                                              r"expected a run of hsrdn or cmkd"):
        hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", f"model.student.init={ckpt}")
    with pytest.raises(XmkdConfigError, match=r"model.teacher_checkpoint: .*nope.pt: no such checkpoint; train the "
                                              r"LiDAR teacher first"):
        hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={tmp_path / 'nope.pt'}")
    # a teacher of another BEV network: both values named (not a list of mismatched tensors)
    with pytest.raises(XmkdConfigError, match=r"model.second: the teacher .*last.pt was trained with "
                                              r"bev_channels=64 and this config has bev_channels=96"):
        hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", "model.second.bev_channels=96")
    # a CMKD student (self-calibration gate) cannot start from an HSRDN run (SE gate): named, not a list of tensors
    bev_run = tmp_path / "bev"
    bev_cfg = ["model.stage=bev", f"output_dir={bev_run}", "name=h", "train.max_iters=1", "train.val_every=1",
               "train.ckpt_every=1"]
    recipe_cls = get_recipe("hsrdn")
    cfg = load_config(REPO / "configs" / "hsrdn" / "synthetic_bev.yaml", [
        f"data.root={kitti}", "data.num_workers=0", "data.image_size=[160,48]", f"model.teacher_checkpoint={ckpt}",
        *bev_cfg], schema=recipe_cls.schema)
    Trainer(cfg, recipe_cls, progress=False).fit()
    hsrdn_ckpt = bev_run / "h" / "checkpoints" / "last.pt"
    with pytest.raises(XmkdConfigError, match=r"model.student.init: .*last.pt is a student with SCNet gate 'se' \(a "
                                              r"hsrdn run\) and this config's gate is 'sc'"):
        hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", f"model.student.init={hsrdn_ckpt}",
              config="cmkd/synthetic.yaml")
    assert "net" in hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", f"model.student.init={hsrdn_ckpt}").nets
    # how the BatchNorms train is not the network's shape: a student may set its own momentum
    stage1 = hsrdn(kitti, tmp_path, f"model.teacher_checkpoint={ckpt}", "model.second.bn_momentum=0.5")
    assert "net" in stage1.nets
