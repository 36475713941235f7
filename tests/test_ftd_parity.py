"""FtD++ / xMUDA / BFtD as released (issue 16; docs/ftd.md, Release parity): every front-camera point scored, SSDA
and SSDA + pseudo-labels with FtD++, L_fm's target, EMA teachers in train mode, xDPL, colour jitter, vKITTI weather
and downsampling, student mixup and the mixup-or-FDA coin flip, the SSDA batch and loss, the 2D learning rate, the
published settings of the scenario configs, and BFtD's fusion classifier."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import read_write
from PIL import Image, ImageEnhance

from xmkd.config import load_config, peek_recipe
from xmkd.data.collate import in_range, voxel_batch
from xmkd.data.index import IndexedFrames, prepare
from xmkd.data.labels import get_label_space
from xmkd.data.pseudo_labels import PseudoLabels
from xmkd.data.style import fda, mixup
from xmkd.data.synthetic.synth import SynthOptions, synthesize
from xmkd.geometry.camera import DEFAULT_MIN_DEPTH
from xmkd.models.point.scn_unet import SCNUNet
from xmkd.recipes import get_recipe
from xmkd.recipes.xmuda import log_class_weights

REPO = Path(__file__).resolve().parents[1]
SMALL = ["data.num_workers=0", "data.image_size=[64,36]", "target.image_size=[64,36]", "model.backbone_2d=resnet18",
         "model.max_points=600"]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """A day source (2 scenes) and a night target with 3 scenes: 2 training scenes (one SSDA-labelled) + 1 val."""
    out = {}
    for preset, seed, frames in (("day", 0, 4), ("night", 1, 6)):
        root = tmp_path_factory.mktemp(preset) / "nus"
        synthesize(SynthOptions(out=str(root), preset=preset, frames=frames, frames_per_scene=2, seed=seed,
                                image_size=(160, 90), cameras=("CAM_FRONT",), sweeps=False), progress=False)
        prepare("nuscenes", root, root / "xmkd_index", progress=False)
        out[preset] = root
    return out


def build(worlds, tmp_path, path="ftd/synthetic_day_night.yaml", *extra):
    recipe_cls = get_recipe(peek_recipe(REPO / "configs" / path))
    cfg = load_config(REPO / "configs" / path, [
        f"data.root={worlds['day']}", f"target.root={worlds['night']}", f"output_dir={tmp_path}", *SMALL, *extra],
        schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    return recipe


def unbuilt(path: str, *extra: str):
    """A recipe with its config and label space but no networks (for the loss formulas alone)."""
    recipe_cls = get_recipe(peek_recipe(REPO / "configs" / path))
    cfg = load_config(REPO / "configs" / path, list(extra), schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.space = get_label_space("nuscenes6")
    return recipe


def front_camera_points(frame, camera: str, size: tuple[int, int]) -> np.ndarray:
    """Which keyframe points project into the camera resized to `size`: the pinhole model written out here, not
    the recipe's code."""
    cam = frame.cameras[camera]
    h, w = cam.image.shape[:2]
    K = np.diag([size[0] / w, size[1] / h, 1.0]) @ cam.K
    n = int(frame.meta.get("num_keyframe_points", frame.num_points))
    xyz1 = np.column_stack([frame.points[:n, :3], np.ones(n)])
    p = (cam.T_cam_lidar @ xyz1.T).T[:, :3]
    z = p[:, 2]
    u = (K[0, 0] * p[:, 0] + K[0, 2] * z) / np.where(z > 0, z, 1)
    v = (K[1, 1] * p[:, 1] + K[1, 2] * z) / np.where(z > 0, z, 1)
    return (z > DEFAULT_MIN_DEPTH) & (u >= 0) & (u < size[0]) & (v >= 0) & (v < size[1])


def test_every_front_camera_point_is_scored_and_weighs_in_the_class_weights(worlds, tmp_path, monkeypatch):
    recipe = build(worlds, tmp_path, "xmuda/synthetic_day_night.yaml", "target.val_split=synthetic_val")
    t = recipe.cfg.target
    frames = IndexedFrames(worlds["night"] / "xmkd_index", "synthetic_val", "nuscenes6", cameras=["CAM_FRONT"])
    visible = [front_camera_points(f, "CAM_FRONT", (64, 36)) for f in frames]
    far = sum((v & ~in_range(f.points[:len(v), :3], t.point_range)).sum() for f, v in zip(frames, visible))
    assert far > 0  # points beyond point_range exist: the old crop would have dropped them
    labelled = sum((f.labels[:len(v)][v] != 255).sum() for f, v in zip(frames, visible))
    scored = []
    import xmkd.recipes.xmuda as xm

    class Counting(xm.ConfusionMatrix):
        def update(self, pred, target):
            scored.append(int((target != 255).sum()))
            return super().update(pred, target)
    monkeypatch.setattr(xm, "ConfusionMatrix", Counting)
    val = recipe.val_dataset()
    batches = [recipe.collate([val[(0, i)]]) for i in range(len(val))]
    assert sum(len(b["labels"]) for b in batches) == sum(v.sum() for v in visible)
    recipe.validate(batches)
    assert sum(scored) == 3 * labelled  # 2D, 3D and xM each score every labelled front-camera point
    # the source's class weights: log(5 N / N_c) / min over its front-camera training points (the release's rule)
    src = IndexedFrames(worlds["day"] / "xmkd_index", "synthetic_train", "nuscenes6", cameras=["CAM_FRONT"])
    counts = np.zeros(6)
    for f in src:
        v = front_camera_points(f, "CAM_FRONT", (64, 36))
        lab = f.labels[:len(v)][v]
        counts += np.bincount(lab[lab != 255], minlength=6)[:6]
    assert np.allclose(recipe.weights.numpy(), log_class_weights(counts), atol=1e-6)
    # training keeps every front-camera point as well (no `max_points` cap, which the test's SMALL settings set)
    with read_write(recipe.cfg):
        recipe.cfg.model.max_points = 0
    rng = np.random.default_rng(0)
    for f in list(src)[:2]:
        sample = recipe.make_domain_sample(f, rng, recipe.cfg.data, "source")
        assert np.array_equal(sample["raw"], np.nonzero(front_camera_points(f, "CAM_FRONT", (64, 36)))[0])
    assert (worlds["day"] / "xmkd_index" / "front_camera_class_counts.json").is_file()  # counted once, then cached
    given = build(worlds, tmp_path, "xmuda/synthetic_day_night.yaml", "model.class_weight_values=[1,2,3,4,5,6]")
    assert given.weights.tolist() == [1, 2, 3, 4, 5, 6]


def test_ftd_ssda_and_ssda_with_pseudo_labels(worlds, tmp_path):
    recipe = build(worlds, tmp_path, "ftd/synthetic_day_night_ssda.yaml")
    ds = recipe.train_dataset()
    items = [ds[(0, 0)], ds[(0, 1)]]
    batch = recipe.collate(items)
    src = batch["source"]
    # B / 2 source + B / 2 labelled target frames collated, B unlabelled target frames
    assert len(src["images"]) == 2 and len(batch["target"]["images"]) == 2
    assert src["from_target"].any() and (~src["from_target"]).any()
    # the teacher batch covers the whole collated batch, point for point
    assert len(batch["styled"]["point_uv"]) == len(src["point_uv"]) and len(batch["styled"]["images"]) == 2
    losses = recipe.training_step(batch, 0)
    assert {"seg_2d", "seg_3d", "xm_src", "xm_trg", "cons"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    # the supervised CE is the mean of the source's and the labelled target's, each with its own class weights
    out = recipe.forward(src)
    y, t, ig = src["labels"], src["from_target"], 255
    ce_s = F.cross_entropy(out["main3d"], torch.where(t, ig, y), weight=recipe.weights, ignore_index=ig)
    ce_t = F.cross_entropy(out["main3d"], torch.where(t, y, ig), weight=recipe.target_weights, ignore_index=ig)
    assert math.isclose(losses["seg_3d"].item(), (0.5 * (ce_s + ce_t)).item(), rel_tol=1e-4)
    # pseudo-labels made for the unlabelled split only: the labelled frames never look them up
    unlabelled = recipe.frames_of(recipe.cfg.target, "synthetic_train_unlabeled")
    pl = PseudoLabels(6)
    for f in unlabelled:
        n = int(f.meta.get("num_keyframe_points", f.num_points))
        pl.add(f.frame_id, n, np.arange(n), np.full(n, 0.95), f.labels[:n] % 6, np.full(n, 0.95), f.labels[:n] % 6)
    pl.finish()
    pl.save(tmp_path / "pl.npz")
    recipe = build(worlds, tmp_path, "ftd/synthetic_day_night_ssda.yaml", "model.lambda_pl=1.0",
                   f"model.pseudo_labels={tmp_path / 'pl.npz'}")
    ds = recipe.train_dataset()
    batch = recipe.collate([ds[(0, 0)], ds[(0, 1)]])
    assert len(batch["target"]["pl_2d"]) == len(batch["target"]["labels"])
    losses = recipe.training_step(batch, 0)
    assert "pl" in losses and torch.isfinite(losses["pl"]) and losses["pl"].item() > 0
    sum(losses.values()).backward()


def test_a_pseudo_label_file_of_another_split_or_dataset_is_refused_before_training(worlds, tmp_path):
    from xmkd.errors import XmkdDataError

    recipe = build(worlds, tmp_path, "ftd/synthetic_day_night_ssda.yaml")
    frames = list(recipe.frames_of(recipe.cfg.target, "synthetic_train_unlabeled"))

    def write(name, skip=0, extra_points=0):
        pl = PseudoLabels(6)
        for f in frames[skip:]:
            n = int(f.meta.get("num_keyframe_points", f.num_points))
            pl.add(f.frame_id, n + extra_points, np.arange(n), np.full(n, 0.9), f.labels[:n] % 6, np.full(n, 0.9),
                   f.labels[:n] % 6)
        pl.finish()
        return pl.save(tmp_path / name)

    args = ("ftd/synthetic_day_night_ssda.yaml", "model.lambda_pl=1.0")
    with pytest.raises(XmkdDataError, match=r"part.npz: model.pseudo_labels: no pseudo-labels for 1 of the "
                                            rf"{len(frames)} frames of split 'synthetic_train_unlabeled'.*--split "
                                            "synthetic_train_unlabeled"):
        build(worlds, tmp_path, *args, f"model.pseudo_labels={write('part.npz', skip=1)}")
    # the same frame ids with other point counts: made from another world (synthetic worlds repeat ids)
    with pytest.raises(XmkdDataError, match=rf"{len(frames)} frame\(s\) of split 'synthetic_train_unlabeled' have "
                                            r"other point counts than the file's .*a file made from another dataset"):
        build(worlds, tmp_path, *args, f"model.pseudo_labels={write('other.npz', extra_points=5)}")
    shifted = PseudoLabels.load(tmp_path / "other.npz")
    with pytest.raises(XmkdDataError, match=r"other.npz: frame .* has \d+ points in the file and \d+ in the dataset"):
        shifted.refined(frames[0].frame_id, int(shifted.frames[frames[0].frame_id]["points"]) - 5)
    # a file of another label space: refused before its labels index past the classifier
    wide = PseudoLabels.load(write("ok.npz"))
    wide.num_classes = 10
    wide.save(tmp_path / "wide.npz")
    with pytest.raises(XmkdDataError, match=r"wide.npz: model.pseudo_labels: made for 10 classes; this run's label "
                                            r"space 'nuscenes6' has 6"):
        build(worlds, tmp_path, *args, f"model.pseudo_labels={tmp_path / 'wide.npz'}")
    # a frame whose point count changed after the build's check (or an index without counts): refused when sampled
    recipe = build(worlds, tmp_path, *args, f"model.pseudo_labels={tmp_path / 'ok.npz'}")
    for f in recipe.pseudo.frames.values():
        f["points"] = f["points"] + 1
    with pytest.raises(XmkdDataError, match=r"ok.npz: frame .* points in the file and .* in the dataset"):
        recipe.train_dataset()[(0, 0)]
    # not a pseudo-label file at all: named, with what it is
    (tmp_path / "config.yaml").write_text("recipe: ftd\n")
    np.savez(tmp_path / "arrays.npz", x=np.zeros(3))
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:300])
    for name in ("config.yaml", "arrays.npz", "array.npy", "cut.npz"):
        with pytest.raises(XmkdDataError, match=rf"{name}: not a pseudo-label file of `xmkd pseudo-label`"):
            PseudoLabels.load(tmp_path / name)
    with pytest.raises(XmkdDataError, match="no pseudo-labels for frame nosuch"):
        shifted.refined("nosuch")


def test_fm_target_is_the_softmax_of_summed_probabilities():
    recipe = unbuilt("ftd/synthetic_day_night.yaml")
    # two confident heads on class 0 (p = 0.9, 0.05, 0.05): the target is softmax([1.8, 0.1, 0.1])
    logits = torch.log(torch.tensor([[0.9, 0.05, 0.05]]))
    target = recipe.joint_target({"main2d": logits, "main3d": logits})
    e = [math.exp(1.8), math.exp(0.1), math.exp(0.1)]
    assert torch.allclose(target, torch.tensor([[x / sum(e) for x in e]]), atol=1e-6)  # top 0.7324, not 0.998
    # and L_cons is built from it: lambda_cons (c L_sm + lambda_cmkd L_fm) with KL(target || student)
    t = {"main2d": torch.tensor([[2.0, 0.0, -1.0]]), "main3d": torch.tensor([[0.5, 0.2, 0.1]])}
    s = {"main2d": torch.tensor([[0.1, 0.3, 0.0]]), "main3d": torch.tensor([[1.0, -1.0, 0.0]])}
    recipe.teacher_outputs = lambda batch: t

    def kl(p, logits):
        return float((p * (p.log() - F.log_softmax(logits, 1))).sum())
    p_f, p_3 = F.softmax(t["main2d"], 1), F.softmax(t["main3d"], 1)
    joint = F.softmax(p_f + p_3, 1)
    m = recipe.cfg.model
    expected = m.lambda_cons * (m.c * (kl(p_f, s["main2d"]) + kl(p_3, s["main3d"]))
                                + m.lambda_cmkd * (kl(joint, s["main2d"]) + kl(joint, s["main3d"])))
    got = recipe.teacher_losses({"styled": None}, s, None, 0)["cons"]
    assert math.isclose(float(got), expected, rel_tol=1e-5)


def test_ema_teachers_run_in_train_mode_and_start_from_their_own_init(worlds, tmp_path):
    recipe = build(worlds, tmp_path)
    teachers = recipe.emas()
    student, teacher = recipe.nets["net3d"]["head"].main.weight, teachers["net3d"].module["head"].main.weight
    assert not torch.equal(student, teacher) and teachers["net3d"].alpha() == 0.5  # the release's mean teacher
    seen = []
    for ema in teachers.values():
        ema.module.eval()  # whatever mode they were left in, the step runs them as configured
        for mod in ema.module.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.Dropout)):
                mod.register_forward_pre_hook(lambda mod, args: seen.append(mod.training))
    ds = recipe.train_dataset()
    recipe.training_step(recipe.collate([ds[(0, 0)], ds[(0, 1)]]), 0)
    assert seen and all(seen)  # batch statistics and dropout, as in the release
    recipe = build(worlds, tmp_path, "ftd/synthetic_day_night.yaml", "model.teacher_mode=eval",
                   "model.teacher_init=student")
    assert torch.equal(recipe.nets["net3d"]["head"].main.weight, recipe.emas()["net3d"].module["head"].main.weight)
    assert not recipe.emas()["net2d"].module.training


def test_xdpl_weight_is_a_batch_scalar_from_the_mimicry_kl():
    recipe = unbuilt("ftd/synthetic_day_night.yaml")
    gen = torch.Generator().manual_seed(0)
    out = {k: torch.randn(5, 6, generator=gen, requires_grad=True) for k in ("main2d", "main3d", "mimic2d", "mimic3d")}
    batch = {"pl_2d": torch.tensor([0, 1, 255, 3, 4]), "pl_3d": torch.tensor([255, 255, 2, 2, 5])}
    ce2 = F.cross_entropy(out["main2d"], batch["pl_2d"], ignore_index=255)
    ce3 = F.cross_entropy(out["main3d"], batch["pl_3d"], ignore_index=255)
    kl2 = F.kl_div(F.log_softmax(out["mimic2d"], 1), F.softmax(out["main3d"], 1).detach(), reduction="batchmean")
    kl3 = F.kl_div(F.log_softmax(out["mimic3d"], 1), F.softmax(out["main2d"], 1).detach(), reduction="batchmean")
    loss = recipe.pl_loss(out, batch)
    assert math.isclose(loss.item(), (torch.exp(-kl2) * ce2 + torch.exp(-kl3) * ce3).item(), rel_tol=1e-5)
    loss.backward()
    assert out["mimic2d"].grad is None  # detached weight (the default, a fix)
    release = unbuilt("ftd/synthetic_day_night.yaml", "model.pl_weight_detach=false")
    release.pl_loss(out, batch).backward()
    assert out["mimic2d"].grad.abs().sum() > 0  # the release's gradient through exp(-KL)
    plain = unbuilt("ftd/synthetic_day_night.yaml", "model.pl_weight=none")
    assert math.isclose(plain.pl_loss(out, batch).item(), (ce2 + ce3).item(), rel_tol=1e-5)  # vK->SK: plain CE


@pytest.mark.parametrize("op,enhance", [("adjust_brightness", ImageEnhance.Brightness),
                                        ("adjust_contrast", ImageEnhance.Contrast),
                                        ("adjust_saturation", ImageEnhance.Color)])
def test_color_jitter_matches_pil(op, enhance):
    import xmkd.data.color as color

    image = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    for factor in (0.6, 1.3):
        ref = np.asarray(enhance(Image.fromarray(image)).enhance(factor))
        assert np.abs(getattr(color, op)(image, factor).astype(int) - ref).max() <= 1
    jittered = color.color_jitter(image, [0.4, 0.4, 0.4], np.random.default_rng(1))
    assert jittered.shape == image.shape and not np.array_equal(jittered, image)
    assert np.array_equal(color.color_jitter(image, [0, 0, 0], np.random.default_rng(1)), image)


def test_student_mixup_and_the_teacher_coin_flip(worlds, tmp_path):
    recipe = build(worlds, tmp_path, "ftd/synthetic_day_night.yaml", "model.style=mixup_or_fda")
    ds = recipe.train_dataset()
    items = [ds[(0, 0)], ds[(0, 1)]]
    batch = recipe.collate(items)
    s, t = items[0]["source"], items[0]["target"]
    assert np.array_equal(batch["source"]["images"][0].permute(1, 2, 0).numpy(), mixup(s["image"], t["image"], 0.2))
    assert np.array_equal(recipe.stylise(s, t, 0.2)["image"], mixup(s["image"], t["image"], 0.05))
    assert np.array_equal(recipe.stylise(s, t, 0.7)["image"], fda(s["image"], t["image"], 0.1))
    styled = batch["styled"]["images"][0].permute(1, 2, 0).numpy()
    assert np.array_equal(styled, recipe.stylise(s, t, items[0]["coin"])["image"])  # built from the unmixed image
    with read_write(recipe.cfg):
        recipe.cfg.model.style_float = True  # the release's float images: neither rounded nor clipped
    assert np.array_equal(recipe.stylise(s, t, 0.7)["image"], fda(s["image"], t["image"], 0.1, as_uint8=False))
    batch = recipe.collate(items)
    assert batch["styled"]["images"].dtype == batch["source"]["images"].dtype == torch.float32


def test_3d_source_ce_weight_and_the_2d_learning_rate(worlds, tmp_path):
    recipe = build(worlds, tmp_path, "ftd/synthetic_day_night.yaml", "model.lambda_seg_3d=0.1", "model.lr_2d=0.0001")
    ds = recipe.train_dataset()
    batch = recipe.collate([ds[(0, 0)]])
    losses, src, _ = recipe.adaptation_losses(batch)
    full = F.cross_entropy(src["main3d"], batch["source"]["labels"], weight=recipe.weights, ignore_index=255)
    assert math.isclose(losses["seg_3d"].item(), 0.1 * full.item(), rel_tol=1e-5)
    groups = recipe.param_groups()["main"]
    two_d = {id(p) for p in recipe.nets["net2d"].parameters()}
    assert groups[1]["lr"] == 0.0001 and {id(p) for p in groups[1]["params"]} == two_d
    assert "fused_head" in recipe.nets["net2d"]  # the fused head trains at the 2D rate, as in the release
    rest = {id(p) for n in ("net3d", "fusion") for p in recipe.nets[n].parameters()}
    assert {id(p) for p in groups[0]["params"]} == rest and "lr" not in groups[0]


def test_vkitti_weather_and_downsampling(tmp_path):
    root = tmp_path / "vk"
    rng = np.random.default_rng(1)
    for weather, value in (("clone", 0), ("fog", 200)):
        (root / "vkitti_1.3.1_rgb" / "0001" / weather).mkdir(parents=True)
        Image.fromarray(np.full((375, 1242, 3), value, np.uint8)).save(
            root / "vkitti_1.3.1_rgb" / "0001" / weather / "00000.png")
    (root / "vkitti3d_npy" / "0001").mkdir(parents=True)
    pts = np.column_stack([rng.uniform(5, 30, 3000), rng.uniform(-3, 3, 3000), rng.uniform(-1.5, 0.5, 3000),
                           rng.uniform(0, 255, (3000, 3)), rng.integers(0, 14, 3000)]).astype(np.float64)
    np.save(root / "vkitti3d_npy" / "0001" / "0001_00000.npy", pts)
    prepare("virtualkitti", root, root / "xmkd_index", progress=False)
    recipe_cls = get_recipe("xmuda")
    cfg = load_config(REPO / "configs" / "xmuda" / "vkitti_semantickitti.yaml", [
        f"data.root={root}", "target.dataset=virtualkitti", f"target.root={root}", "target.label_space=virtualkitti6",
        "target.train_split=train", "target.val_split=train", "model.pretrained_2d=''", "model.source_points=1000",
        "model.color_jitter=[]", "model.hflip=false", "model.bottom_crop=[]", "model.random_weather=[clone,fog]",
        "data.num_workers=0"], schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    frame = recipe.frames_of(cfg.data, "train")[0]
    visible = front_camera_points(frame, "image_2", (1242, 375)).sum()
    source, target = recipe.sample_maker("source"), recipe.sample_maker("target")
    draws = [source(frame, np.random.default_rng(i)) for i in range(12)]
    assert visible > 1000 and all(len(s["xyz"]) <= 1000 for s in draws)
    assert {int(s["image"].max()) for s in draws} == {0, 200}  # clone and fog renderings both drawn
    assert len(target(frame, np.random.default_rng(0))["xyz"]) > 1000  # the target is not downsampled
    assert len(source(frame, None)["xyz"]) == visible and int(source(frame, None)["image"].max()) == 0


def test_published_configs_carry_the_release_settings():
    # (config, batch, iterations, milestones, gamma, 2D lr, ImageNet) from the release configs (audit section 2.9)
    table = {
        "ftd/nuscenes_day_night.yaml": (8, 100000, [80000, 90000], 0.1, 0.0),
        "ftd/nuscenes_usa_singapore.yaml": (8, 60000, [40000, 50000], 1.0, 1e-4),
        "ftd/vkitti_semantickitti.yaml": (4, 60000, [48000, 56000], 0.1, 1e-4),
        "ftd/a2d2_semantickitti.yaml": (4, 200000, [160000, 180000], 0.1, 1e-4),
        "ftd/nuscenes_usa_singapore_ssda.yaml": (8, 100000, [80000, 90000], 1.0, 1e-4),
        "ftd/a2d2_semantickitti_ssda.yaml": (4, 200000, [160000, 180000], 0.1, 1e-4),
        "xmuda/nuscenes_day_night.yaml": (8, 100000, [80000, 90000], 0.1, 0.0),
        "xmuda/nuscenes_usa_singapore.yaml": (8, 100000, [80000, 90000], 0.1, 0.0),
        "xmuda/vkitti_semantickitti.yaml": (8, 30000, [25000, 28000], 0.1, 0.0),
        "xmuda/a2d2_semantickitti.yaml": (8, 100000, [80000, 90000], 0.1, 0.0),
    }
    for path, (batch, iters, milestones, gamma, lr_2d) in table.items():
        recipe_cls = get_recipe(peek_recipe(REPO / "configs" / path))
        cfg = load_config(REPO / "configs" / path, [], schema=recipe_cls.schema)
        t = cfg.train
        got = (cfg.data.batch_size, t.max_iters, list(t.schedule.milestones), t.schedule.gamma, cfg.model.lr_2d)
        assert got == (batch, iters, milestones, gamma, lr_2d), path
        weights = Path(cfg.model.pretrained_2d)
        assert weights.name == "resnet34-b627a593.pth" and not weights.is_absolute()
        assert len(cfg.model.class_weight_values) == get_label_space(cfg.data.label_space).num_classes
        text = (REPO / "configs" / path).read_text()
        assert "FtD-PlusPlus@0bcb512" in text or "xmuda_journal@c01232d" in text  # the header names the release
    vk = load_config(REPO / "configs" / "ftd" / "vkitti_semantickitti.yaml", [], schema=get_recipe("ftd").schema)
    assert (vk.model.lambda_seg_3d, vk.model.pl_weight, vk.model.source_points) == (0.1, "none", 10000)
    assert len(vk.model.random_weather) == 6


def test_bftd_fusion_classifier_step(worlds, tmp_path):
    recipe = build(worlds, tmp_path, "bftd/synthetic_day_night.yaml")
    assert "fused_head" not in recipe.nets["net2d"] and set(recipe.emas()) == {"net2d", "net3d", "fusion"}
    ds = recipe.train_dataset()
    batch = recipe.collate([ds[(0, 0)], ds[(0, 1)]])
    losses = recipe.training_step(batch, 0)
    assert set(losses) == {"seg_2d", "seg_3d", "seg_fusion", "xm_src", "xm_trg", "cons"}
    sum(losses.values()).backward()
    assert recipe.nets["fusion"]["mffm"].proj[-1].weight.grad.abs().sum() > 0  # its own source CE
    recipe.nets["fusion"].zero_grad(set_to_none=True)
    recipe.xm_loss(recipe.forward(batch["target"])).backward()
    assert recipe.nets["fusion"]["mffm"].proj[-1].weight.grad is None  # the mimicry targets are detached
    for net in recipe.nets.values():
        net.eval()
    probs = recipe.predict_all(batch["target"])
    assert torch.allclose(probs["xm"], F.softmax(recipe.forward(batch["target"])["fusion"], 1))  # xM = the fusion
    us = load_config(REPO / "configs" / "bftd" / "nuscenes_usa_singapore.yaml", [], schema=recipe.schema)
    assert (us.model.fusion_net, us.model.student_mixup, us.model.lambda_target_teacher) == ("mffm_v1", 0.01, 0.001)


def test_synthetic_world_writes_an_ssda_split(worlds):
    splits = json.loads(next((worlds["night"]).glob("*/splits.json")).read_text())
    labelled, unlabelled = splits["synthetic_train_labeled"], splits["synthetic_train_unlabeled"]
    assert labelled and unlabelled and sorted(labelled + unlabelled) == sorted(splits["synthetic_train"])


def test_absent_classes_count_zero_and_the_release_3d_augmentation_and_crop():
    from xmkd.recipes.lidar_seg import Augment, augment_points
    from xmkd.recipes.xmuda import bottom_crop

    recipe = unbuilt("xmuda/synthetic_day_night.yaml")  # 6 classes; the batch has classes 0 and 1 only
    probs = torch.eye(6)[torch.tensor([0, 0, 1, 1])]
    recipe.predict_all = lambda batch: {"2d": probs, "3d": probs, "xm": probs}
    batch = {"labels": torch.tensor([0, 1, 1, 1])}
    assert math.isclose(recipe.validate([batch])["miou_xm"], (0.5 + 2 / 3) / 6)  # absent classes: IoU 0
    skip = unbuilt("xmuda/synthetic_day_night.yaml", "model.absent_class_iou=skip")
    skip.predict_all = recipe.predict_all
    assert math.isclose(skip.validate([batch])["miou_xm"], (0.5 + 2 / 3) / 2)
    # xMUDA's augment_and_scale_3d: points @ (I + N(0, 0.1^2)), then the flip and the rotation about z
    xyz = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    aug = recipe.cfg.model.augment
    assert (aug.noisy_rot, list(aug.scale)) == (0.1, [1.0, 1.0])
    only_noise = augment_points(xyz, np.random.default_rng(3),
                                Augment(rotate=False, flip=False, scale=[1.0, 1.0], noisy_rot=0.1))
    noise = np.random.default_rng(3).normal(0, 0.1, (3, 3))
    assert np.allclose(only_noise, xyz @ (np.eye(3) + noise), atol=1e-5)
    # the KITTI bottom crop is drawn again while it holds at most 100 points
    uv = np.column_stack([np.random.default_rng(1).uniform(900, 1000, 150), np.full(150, 300.0)]).astype(np.float32)
    image = np.zeros((375, 1242, 3), np.uint8)
    first = int(np.random.default_rng(1).integers(0, 1242 - 480 + 1))
    assert not 520 < first <= 900  # the first draw misses the points: a single draw would keep none of them
    _, _, _, inside = bottom_crop(image, uv, [480, 302], np.random.default_rng(1))
    assert inside.sum() > 100


def test_uda_benchmark_paired_differences():
    from benchmarks.bench_uda import paired, tables

    assert paired([1.0, 2.0, 3.0]) == "+2.0 ± 1.0 [-0.5, +4.5]"  # t(0.975, 2) = 4.303: 2 +- 4.303 / sqrt(3)

    def row(xm):
        return {"miou_2d": 0.3, "miou_3d": 0.4, "miou_xm": xm}
    per_seed = [{"source-only": row(0.30), "xMUDA": row(0.35), "FtD++": row(x)} for x in (0.50, 0.45, 0.50)]
    text = tables(per_seed, (0, 1, 2))
    assert "| FtD++ − xMUDA | +15.0 | +10.0 | +15.0 | +13.3 ± 2.9 [+6.2, +20.5] |" in text
    assert "| xMUDA − source-only | +5.0 | +5.0 | +5.0 |" in text and "FtD++ + PL −" not in text
    # the row table's std is the population one (ddof 0: 2.36 for 50 / 45 / 50; ddof 1 would print 2.89), as labelled
    assert "| row (mean ± std, ddof 0) |" in text and "| FtD++ | 30.00 ± 0.00 | 40.00 ± 0.00 | 48.33 ± 2.36 |" in text
    # with the PL and oracle rows: what the pseudo-labels add, and the gap to the oracle, each paired with FtD++
    for r, pl, oracle in zip(per_seed, (0.52, 0.44, 0.47), (0.60, 0.60, 0.55)):
        r.update({"FtD++ + PL": row(pl), "target-only": row(oracle)})
    text = tables(per_seed, (0, 1, 2))
    assert "| FtD++ + PL − FtD++ | +2.0 | -1.0 | -3.0 |" in text
    assert "| target-only − FtD++ | +10.0 | +15.0 | +5.0 | +10.0 ± 5.0 [-2.4, +22.4] |" in text


def test_bftd_fusion_classifier_parameter_counts():
    """Counts derived from the BFtD release's definitions (BFTD:xmuda/models/xmuda_arch.py, CBAM.py,
    ExternalAttention.py), 6 classes: CBAMBlock(64, 4, 3) = 2 * 64 * 16 + 2 * 9 + 1 = 2067; Mult_EA(d) =
    (4d^2 + 4d) + (d/8 * 64 + 64) + (64 * d/8 + d/8) + (4d * d + d): 34184 (64), 2450 (16), 52954 (80)."""
    from xmkd.models.bftd import BFtDFusion

    def count(m):
        return sum(p.numel() for p in m.parameters())
    mffm, v1 = BFtDFusion(6, "mffm"), BFtDFusion(6, "mffm_v1")
    assert (count(mffm.cbam), count(mffm.ea_2d), count(mffm.ea_3d), count(v1.ea)) == (2067, 34184, 2450, 52954)
    # MFFM: + MLP 80->80->64 (11664) + Mult_EA(64) + Linear 64->32, BN(32), Linear 32->6 (2342)
    assert count(mffm) == 2067 + 34184 + 2450 + 11664 + 34184 + 2080 + 64 + 198 == 86891
    # MFFM_v1: + MLP 80->80->80 (12960) + Mult_EA(80) + Linear 80->64, 64->64, 64->6 (9734)
    assert count(v1) == 2067 + 34184 + 2450 + 12960 + 52954 + 5184 + 4160 + 390 == 114349


def test_density_transfer_uses_the_whole_clouds(worlds, tmp_path):
    from xmkd.data.style import density_transfer

    recipe = build(worlds, tmp_path, "ftd/synthetic_day_night.yaml")
    item = recipe.train_dataset()[(0, 0)]
    s, t = item["source"], item["target"]
    assert not np.array_equal(s["metric"], s["xyz"])  # far points: clipped for the grid, not for alpha
    moved, alpha = density_transfer(s["metric"], t["metric"])
    styled = recipe.stylise(s, t, 0.7)["xyz"]
    d = recipe.cfg.data
    assert np.allclose(styled, np.clip(moved, np.array(d.point_range[:3]) + 0.1, np.array(d.point_range[3:]) - 0.1))


def test_the_release_grid_extent_is_a_point_range_away():
    """docs/ftd.md, Release parity (points): `data.point_range` of +-102.4 m (the release's 4096 voxels of 5 cm in x
    and y, 2^32 cells) runs on spconv and computes the same features as +-51.2 m for the points inside both (the
    origins differ by 1024 voxels, a multiple of the network's stride 64). One sample only: on CPU, spconv 2.3.8
    aliases the samples of a batch once batch x cells exceeds 2^32 (docs/ftd.md)."""
    rng = np.random.default_rng(0)
    xyz = np.concatenate([rng.uniform([-50, -50, -2], [50, 50, 3], (1500, 3)),
                          rng.uniform([-50, -50, -2], [-45, -45, 3], (1500, 3))]).astype(np.float32)
    torch.manual_seed(0)
    net = SCNUNet(levels=7).eval()
    out = []
    for r in (51.2, 102.4):
        batch = voxel_batch([xyz], [np.ones((len(xyz), 1), np.float32)], 0.05, [-r, -r, -6.4, r, r, 6.4], multiple=64)
        with torch.no_grad():
            out.append(net(batch))
    assert batch["spatial_shape"].tolist() == [4096, 4096, 256] and out[0].abs().max() > 0
    assert torch.equal(out[0], out[1])


def test_the_release_3d_translation_as_a_switch(worlds, tmp_path):
    """`model.translate_3d` (docs/ftd.md, Release parity, 3D augmentation): a uniform shift of 0 .. 64 voxels per
    axis, the fraction on the points, the whole voxels on the grid; every other draw of the sample stays the same."""
    moved = build(worlds, tmp_path, "xmuda/synthetic_day_night.yaml", "model.translate_3d=true")
    plain = build(worlds, tmp_path, "xmuda/synthetic_day_night.yaml")
    ds, ds0 = moved.train_dataset(), plain.train_dataset()
    items, items0 = [ds[(0, 0)], ds[(0, 1)]], [ds0[(0, 0)], ds0[(0, 1)]]
    s, s0 = items[0]["source"], items0[0]["source"]
    assert np.array_equal(s["uv"], s0["uv"]) and np.array_equal(s["image"], s0["image"])
    offset, size = s["voxel_offset"], moved.cfg.data.voxel_size
    assert offset.shape == (3,) and 0 <= offset.min() and offset.max() < 64
    assert np.abs(s["xyz"] - s0["xyz"]).max() <= size + 1e-4  # the fraction of a voxel (or a clip at the edge)
    batch, batch0 = moved.collate(items), plain.collate(items0)
    src, src0 = batch["source"], batch0["source"]
    assert src["spatial_shape"].tolist() == (src0["spatial_shape"] + 64).tolist()
    first = src["voxel_coords"][:, 0] == 0
    lo = np.asarray(moved.cfg.data.point_range[:3])
    cell = np.floor((s["xyz"].astype(np.float64) - lo) / size).astype(np.int64) + offset
    assert {tuple(c) for c in cell} == {tuple(c) for c in src["voxel_coords"][first, 1:].tolist()}
    assert "voxel_offset" not in moved.val_dataset()[(0, 0)]  # evaluation: no augmentation
    losses = moved.training_step(batch, 0)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("path", ["ftd/nuscenes_day_night.yaml", "ftd/a2d2_semantickitti.yaml",
                                  "ftd/vkitti_semantickitti.yaml", "xmuda/nuscenes_usa_singapore.yaml"])
def test_published_configs_translate_in_3d_and_style_float_images_as_released(path):
    """docs/ftd.md, Release parity: the release's random 3D translation and float FDA / mixup images are the
    defaults; only the synthetic (CPU-scale) configs, as measured in docs/benchmarks.md, turn them off."""
    cfg = load_config(REPO / "configs" / path, schema=get_recipe(peek_recipe(REPO / "configs" / path)).schema)
    assert cfg.model.translate_3d is True
    assert getattr(cfg.model, "style_float", True) is True
    synthetic = path.split("/")[0] + "/synthetic_day_night.yaml"
    cfg = load_config(REPO / "configs" / synthetic, schema=get_recipe(peek_recipe(REPO / "configs" / synthetic)).schema)
    assert cfg.model.translate_3d is False and getattr(cfg.model, "style_float", False) is False
