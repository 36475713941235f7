"""U2MKD against its release (github:isunLt/U2MKD @ d8dfa69): parameter counts derived by hand from the release's
layer definitions, SphereFormer windows per stage, the fusion blocks' wiring, the feature-imitation input, the
published configs (no paste, SyncBN, warm-up, teacher inputs, augmentation, paste cap, pixel head order, voxel
input feature). docs/u2mkd.md, "Release parity", lists each item."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from xmkd.config import ScheduleConfig, load_config
from xmkd.data.collate import voxel_batch
from xmkd.engine.schedules import lr_factor
from xmkd.io import architecture_only
from xmkd.models.fusion import sample_image
from xmkd.models.point.sparse_unet import SparseUNet, SparseUNetConfig
from xmkd.models.u2mkd import U2MKDStudent
from xmkd.recipes import get_recipe
from xmkd.recipes.lidar_seg import Augment, augment_points, first_per_voxel

REPO = Path(__file__).resolve().parents[1]
WIDTHS = (32, 32, 64, 128, 256, 256, 128, 96, 96)


def bn(c: int) -> int:  # BatchNorm / LayerNorm: weight + bias
    return 2 * c


def conv3d(k: int, cin: int, cout: int) -> int:  # torchsparse Conv3d: kernel (k^3, cin, cout), no bias
    return k ** 3 * cin * cout


def release_lidar_params(cr: float, in_channels: int, classes: int) -> int:
    """`SPVCNN_SPFORMER` (spvcnn_swiftnet18_spformer_tsd_full.py:18-117), the teacher and the student's LiDAR
    branch: counted layer by layer from the release's definitions."""
    cs = [int(cr * c) for c in WIDTHS]

    def res(cin: int, cout: int) -> int:
        """build_blocks.py ResidualBlock: 2 x (conv 3 + BN), plus a 1x1 conv + BN when cin != cout."""
        return conv3d(3, cin, cout) + bn(cout) + conv3d(3, cout, cout) + bn(cout) + \
            (0 if cin == cout else conv3d(1, cin, cout) + bn(cout))

    n = conv3d(3, in_channels, cs[0]) + bn(cs[0]) + conv3d(3, cs[0], cs[0]) + bn(cs[0])  # stem (:37-41)
    for i in range(4):  # vox_downs (:43-50): BasicConvolutionBlock ks 2 stride 2, 2 residual blocks
        n += conv3d(2, cs[i], cs[i]) + bn(cs[i]) + res(cs[i], cs[i + 1]) + res(cs[i + 1], cs[i + 1])
    length = 24  # quant_size_scale: window / quantum
    for i in range(1, 5):  # transformer_blocks (:56-77): SphereFormer(cs[i], heads = cs[i] // 16)
        d = cs[i]
        heads = d // 16
        h1, h2 = heads // 2, heads - heads // 2
        n += bn(d) + 3 * d * d + 3 * d + d * d + d  # norm1, qkv, proj (spherical_transformer.py:160-162, 310)
        # contextual RPE tables for query, key, value: cubic (2L - 1, 3, h1, 16), radial (2L, 3, h2, 16) (:114-143)
        n += 3 * (2 * length - 1) * 3 * h1 * 16 + 3 * (2 * length) * 3 * h2 * 16
        n += bn(d) + d * 4 * d + 4 * d + 4 * d * d + d  # norm2, Mlp(d, 4d)
    for idx in range(4, 8):  # vox_ups (:86-95): deconv ks 2 + BN, residual (skip concat), residual
        out, skip = cs[idx + 1], cs[7 - idx]
        n += conv3d(2, cs[idx], out) + bn(out) + res(out + skip, out) + res(out, out)
    n += cs[8] * classes + classes  # classifier_vox
    n += sum(a * b + b + bn(b) for a, b in ((cs[0], cs[4]), (cs[4], cs[6]), (cs[6], cs[8])))  # point_transforms
    return n


def release_student_params(classes: int) -> int:
    """`SPVCNN_SWIFTNET18_SPFORMER_MSP2IFM` (tsd_full.py:197-327) at cr 1: the LiDAR branch, SwiftNetRes18, the
    4 C2L (`Atten_Fusion_Conv`) and L2C (`L2CFusion`) blocks, the imputation learners, the pixel classifier."""
    cs = [int(c) for c in WIDTHS]
    img = [64, 64, 128, 256, 128]  # SwiftNetResNet.img_cs (swiftnet.py:123): stage 4 is the 128-channel SPP output

    def conv2d(k: int, cin: int, cout: int) -> int:  # bias-free (conv3x3 / conv1x1 / _BNReluConv)
        return k * k * cin * cout

    def basic(cin: int, cout: int, stride: int) -> int:  # BasicBlock (swiftnet.py:20-50) + downsample
        return conv2d(3, cin, cout) + bn(cout) + conv2d(3, cout, cout) + bn(cout) + \
            (conv2d(1, cin, cout) + bn(cout) if stride != 1 or cin != cout else 0)

    n = release_lidar_params(1.0, 4, classes)
    n += conv2d(7, 3, 64) + bn(64)  # conv1, bn1 (no fc: SwiftNetResNet has no ImageNet head)
    cin = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        n += basic(cin, planes, stride) + basic(planes, planes, 1)
        cin = planes
    # SpatialPyramidPooling (swiftnet.py:139-147, 256-296): BN-ReLU-conv 512 -> 128, 3 levels 128 -> 42, fuse 254 -> 128
    n += bn(512) + 512 * 128 + 3 * (bn(128) + 128 * 42) + bn(128 + 3 * 42) + (128 + 3 * 42) * 128
    for skip in (256, 128, 64):  # 3 x _Upsample(128, skip, 128, k=3): 1x1 bottleneck, 3x3 blend (BN-ReLU-conv)
        n += bn(skip) + skip * 128 + bn(128) + 9 * 128 * 128
    n += bn(128) + 128 * classes  # classifier_pix: _BNReluConv(128, classes, 1)
    for i in range(1, 5):
        pc, ic = cs[i], img[i]
        rc = pc // 4  # IA_Layer (fusion_blocks.py:9-61) inside Atten_Fusion_Conv(ic, pc, pc) (:64-93)
        n += ic * pc + pc + bn(pc)  # conv1: Conv1d(ic, pc) + BN + ReLU
        n += bn(ic) + ic * rc + rc + pc * rc + rc + rc + 1  # fc1: BN-ReLU-Linear(ic, rc); fc2 Linear(pc, rc); fc3
        n += 2 * pc * pc + pc + bn(pc)  # Conv1d(2pc, pc) + bn1
        r = ic // 4  # L2CFusion(ic, pc, ic) (:135-153) with L2CAILayer (:96-132)
        n += 2 * ic * ic + ic + bn(ic)  # conv1: Conv2d(2ic, ic) + bn1
        n += pc * ic + ic + bn(ic)  # L2CAILayer.conv1: Conv2d(pc, ic) + BN + ReLU
        n += ic * r + r + pc * r + r + r + 1  # fc1 Conv2d(ic, ic/4), fc2 Conv2d(pc, ic/4), fc3 Conv2d(ic/4, 1)
        n += pc * ic + ic + bn(ic) + ic * ic + ic + bn(ic)  # learner (tsd_full.py:279-287)
    return n


def count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def nuscenes_config(name: str, extra=()):
    recipe = get_recipe("u2mkd" if name == "u2mkd" else "lidar_seg")
    path = REPO / "configs" / ("u2mkd/nuscenes.yaml" if name == "u2mkd" else "lidar_seg/nuscenes_teacher.yaml")
    return load_config(path, list(extra), schema=recipe.schema)


def test_teacher_and_student_parameter_counts_equal_the_release_architecture():
    # the nets the u2mkd recipe builds from the published config (no weights read); 16 classes here, the release's
    # heads have a 17th row for the ignored label 0 (num_classes: 17)
    recipe = get_recipe("u2mkd")(nuscenes_config("u2mkd"), torch.device("cpu"))
    with architecture_only():
        recipe.build()
    assert count(recipe.nets["teacher"]) == release_lidar_params(2.0, 4, 16) == 91_674_160
    assert count(recipe.nets["student"]) == release_student_params(16) == 35_635_900
    # the release's adapt_layer (tsd_full.py:576-580): Linear(256 -> 512) + BN(512) + ReLU
    assert count(recipe.nets["adapter"]) == 256 * 512 + 512 + bn(512)
    assert [type(m) for m in recipe.nets["adapter"]] == [torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.ReLU]


def test_sphereformer_windows_heads_and_drop_path_per_stage_equal_the_release():
    cfg = nuscenes_config("u2mkd").model
    for backbone, cr in ((cfg.backbone, 1), (cfg.teacher.backbone, 2)):
        net = SparseUNet(4, 16, backbone)
        for i, block in enumerate(net.former):
            attn = block.attn
            # window 0.3 m (voxel 0.05 x window_size 6) and [2, 2, 120]; cubic and angles x2 per stage (:78-84)
            assert torch.allclose(attn.cube, torch.full((3,), 0.3 * 2 ** i))
            assert attn.radial.tolist() == [2.0 * 2 ** i, 2.0 * 2 ** i, 120.0]
            # the release's 4 blocks share one angular quantum array, doubled in place 4 times: 16 x (2 / 24) deg
            assert torch.allclose(attn.radial_quant, torch.tensor([32 / 24, 32 / 24, 5.0]))
            assert attn.heads == net.widths[i + 1] // 16 == [2, 4, 8, 16][i] * cr and attn.head_dim == 16
            assert math.isclose(block.drop_path, [0.05, 0.1, 0.15, 0.2][i], abs_tol=1e-6)  # linspace(0, .3, 7)[1..4]


def test_student_fusion_wiring_is_the_releases():
    cfg = nuscenes_config("u2mkd").model
    student = U2MKDStudent(4, 16, SparseUNetConfig(cr=0.25, head_dim=4), "resnet18", 1, cfg.decoder_width)
    assert [b.n_scales for b in student.l2c] == [4, 3, 2, 1]  # {1,2,4,8}, {1,2,4}, {1,2}, {1}
    assert [b.fuse.in_channels for b in student.l2c] == [128, 256, 512, 256]  # stage 4 on the 128-ch SPP output
    assert len(student.c2l[0].learner) == 5 and isinstance(student.c2l[0].learner[4], torch.nn.BatchNorm1d)
    assert student.camera.backbone.fc is None and len(student.camera.spp.levels) == 3
    # C2L samples with align_corners=True: pixel 0 and W - 1 are the first and last feature columns
    img = torch.arange(12.0).view(1, 1, 3, 4)
    uv = torch.tensor([[0.0, 0.0], [39.0, 23.0], [13.0, 0.0]])  # full image 40 x 24
    assert sample_image(img, torch.zeros(3, dtype=torch.long), uv, (40, 24)).squeeze(1).tolist() == [0.0, 11.0, 1.0]


def test_release_warmup_schedule():
    sched = OmegaConf.structured(ScheduleConfig(name="cosine", warmup_iters=1000, release_warmup=True))
    f = lr_factor(sched, 10_000, world=4)  # 1000 // 4 = 250 warm-up steps from lr / 250
    assert math.isclose(f(0), 1 / 250) and math.isclose(f(249), 1.0) and math.isclose(f(250), 1.0)
    assert math.isclose(f(5250), 0.5 * (1 + math.cos(math.pi * 0.5)))  # cosine over the whole run
    assert lr_factor(sched, 10_000, world=1)(0) == 1.0  # one GPU: no warm-up (core/schedulers.py:23-24)


def test_published_configs_no_paste_syncbn_release_warmup_and_four_teacher_inputs():
    for name in ("u2mkd", "teacher"):
        cfg = nuscenes_config(name)
        assert cfg.model.paste.database == ""  # inst_aug: False in both released configs
        assert cfg.train.sync_bn and cfg.train.schedule.release_warmup and cfg.train.schedule.warmup_iters == 1000
    assert not nuscenes_config("teacher").model.time_lag and nuscenes_config("teacher").data.batch_size == 3
    student = nuscenes_config("u2mkd").model
    assert not student.teacher.time_lag and not student.augment.flip and student.image_input == "raw"
    for ds in ("semantickitti", "waymo"):
        assert load_config(REPO / "configs" / "u2mkd" / f"{ds}.yaml",
                           schema=get_recipe("u2mkd").schema).model.paste.database == ""


PUBLISHED = {"u2mkd": ("u2mkd/nuscenes", "u2mkd/semantickitti", "u2mkd/waymo"), "camera_seg": ("camera_seg/nuscenes",),
             "lidar_seg": ("lidar_seg/nuscenes_teacher", "lidar_seg/semantickitti_teacher", "lidar_seg/waymo_teacher")}
CPU_SCALE = {"u2mkd": ("u2mkd/synthetic",), "camera_seg": ("camera_seg/synthetic",),
             "lidar_seg": ("lidar_seg/synthetic",)}


def shipped(configs: dict[str, tuple[str, ...]]):
    for recipe, names in configs.items():
        for name in names:
            yield name, load_config(REPO / "configs" / f"{name}.yaml", schema=get_recipe(recipe).schema).model


def test_published_configs_paste_cap_pixel_head_and_voxel_feature_are_the_releases():
    for name, m in shipped(PUBLISHED):
        # release core/datasets/utils.py:402: InstAugmentationV2 stops pasting past 5000 points
        assert m.paste.max_added_points == 5000, name
        # release lc_semantic_nusc_tsd_full.py:211-222: sparse_quantize keeps one point per voxel, whose feature the
        # network gets; tsd_full.py:551-556: decoder features upsampled to the image, then the pixel head
        assert m.voxel_feature == "first", name
        if "teacher" in m:
            assert m.teacher.voxel_feature == "first" and m.pixel_head_at_image is True, name
    # the CPU-scale configs keep what their measured benchmark numbers were trained with
    for name, m in shipped(CPU_SCALE):
        assert m.voxel_feature == "mean", name
        if "teacher" in m:
            assert m.teacher.voxel_feature == "mean" and m.pixel_head_at_image is False, name


def test_pretraining_and_kd_teacher_augmentation_are_the_releases():
    """Teacher pre-training (release spformer.yaml + semantic_nusc.py:287-317): 4-way flip, rotation, scale
    U(0.95, 1.05), translation N(0, 0.1 m) per axis, no jitter. The teacher's input in KD (lc_semantic_nusc_tsd_full
    .py:173-208): rotation, scale U(0.95, 1.05), 4-way flip, no translation. The student (:398-405): rotation and
    scale, no flip. Checked as values and as what `augment_points` draws with them."""
    release_pretrain = {"rotate": True, "flip": True, "scale": [0.95, 1.05], "jitter": 0.0, "translate": 0.1,
                        "noisy_rot": 0.0}
    for name, m in shipped({"lidar_seg": PUBLISHED["lidar_seg"]}):
        assert OmegaConf.to_container(m.augment) == release_pretrain, name
    kd_teacher = {**release_pretrain, "translate": 0.0}
    student = {**kd_teacher, "flip": False}
    defaults = get_recipe("u2mkd").schema().model  # the recipe's own defaults are the release's too
    for name, m in [*shipped({"u2mkd": PUBLISHED["u2mkd"]}), ("u2mkd defaults", OmegaConf.structured(defaults))]:
        assert OmegaConf.to_container(m.teacher.augment) == kd_teacher, name
        assert OmegaConf.to_container(m.augment) == student, name
    # plain dataclasses (attribute reads on a DictConfig are slow in a loop)
    pretrain = Augment(**OmegaConf.to_container(nuscenes_config("teacher").model.augment))
    kd, stud = (Augment(**OmegaConf.to_container(a)) for a in (nuscenes_config("u2mkd").model.teacher.augment,
                                                                nuscenes_config("u2mkd").model.augment))
    n = 3000
    shift = np.stack([augment_points(np.zeros((1, 3)), np.random.default_rng(i), pretrain)[0] for i in range(n)])
    assert np.allclose(shift.mean(0), 0, atol=0.012) and np.allclose(shift.std(0), 0.1, rtol=0.06)  # N(0, 0.1 m)
    unit = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for aug in (kd, stud):
        scaled = [augment_points(unit, np.random.default_rng(i), aug) for i in range(n)]
        factors = np.array([s[1, 2] for s in scaled])  # z: neither rotated nor flipped nor shifted
        assert 0.95 <= factors.min() < 0.951 and 1.049 < factors.max() <= 1.05  # U(0.95, 1.05)
        assert np.allclose([np.linalg.norm(s[0]) for s in scaled], factors, rtol=1e-6)  # no translation
    corner = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

    def mirrored(aug, i: int) -> bool:  # the xy map's determinant is negative after a flip
        a = augment_points(corner, np.random.default_rng(i), aug).astype(np.float64)
        return np.linalg.det(np.column_stack([a[1, :2] - a[0, :2], a[2, :2] - a[0, :2]])) < 0

    assert 0.4 < np.mean([mirrored(pretrain, i) for i in range(400)]) < 0.6
    assert not any(mirrored(stud, i) for i in range(100))  # student: no flip


def test_voxel_feature_first_is_the_kept_points_and_mean_is_the_average():
    xyz = np.array([[0.3, 0.1, 0.1], [0.1, 0.2, 0.4], [1.2, 0.1, 0.1], [0.4, 0.4, 0.4]], np.float32)  # voxel 0.5
    feats = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [9.0, 90.0]], np.float32)
    pr = [0.0, 0.0, 0.0, 2.0, 2.0, 2.0]
    first = voxel_batch([xyz], [feats], 0.5, pr, voxel_feature="first")
    mean = voxel_batch([xyz], [feats], 0.5, pr, voxel_feature="mean")
    v = first["point_voxel"].numpy()
    assert v[0] == v[1] == v[3] != v[2] and torch.equal(first["point_voxel"], mean["point_voxel"])
    assert first["voxel_features"][v[0]].tolist() == [1.0, 10.0]  # the voxel's first point, as sparse_quantize
    assert first["voxel_xyz"][v[0]].tolist() == xyz[0].tolist()
    assert mean["voxel_features"][v[0]].tolist() == [4.0, 40.0]  # (1 + 2 + 9) / 3
    assert torch.allclose(mean["voxel_xyz"][v[0]], torch.from_numpy(xyz[[0, 1, 3]].mean(0)))
    assert first["voxel_features"][v[2]].tolist() == mean["voxel_features"][v[2]].tolist() == [3.0, 30.0]
    with pytest.raises(ValueError, match="voxel_feature 'median'"):
        voxel_batch([xyz], [feats], 0.5, pr, voxel_feature="median")


def test_first_per_voxel_keeps_the_first_kept_point_of_each_voxel():
    # voxel 1 m: points 0, 2, 5 share a voxel; 1, 4 another; 3 alone; point 0 is not kept, so 2 stands for its voxel
    xyz = np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5], [0.2, 0.9, 0.1], [0.5, 1.5, 0.5], [1.1, 0.1, 0.9],
                    [0.9, 0.1, 0.2]], np.float32)
    keep = np.array([False, True, True, True, True, True])
    out = first_per_voxel(xyz, keep, 1.0, [0.0, 0.0, 0.0, 2.0, 2.0, 2.0])
    assert np.nonzero(out)[0].tolist() == [1, 2, 3]
    rng = np.random.default_rng(0)  # and on a random cloud: the lowest kept index of every voxel
    xyz = rng.uniform(0, 2, (400, 3)).astype(np.float32)
    keep = rng.random(400) < 0.7
    cell = np.floor(xyz / 0.5).astype(int) @ np.array([16, 4, 1])
    expected = sorted(min(i for i in np.nonzero(keep)[0] if cell[i] == c) for c in set(cell[keep]))
    assert np.nonzero(first_per_voxel(xyz, keep, 0.5, [0.0, 0.0, 0.0, 2.0, 2.0, 2.0]))[0].tolist() == expected


SMALL = ["model.backbone.cr=0.125", "model.teacher.backbone.cr=0.125", "model.decoder_width=32",
         "model.max_points=2000", "data.image_size=[64,36]", "data.num_workers=0", "data.sweeps=2",
         "data.train_split=mini_train", "data.val_split=mini_train", "model.camera_drop=0"]


@pytest.fixture(scope="module")
def kd_overrides(tmp_path_factory) -> list[str]:
    """A tiny nuScenes-format dataset with sweeps and an untrained teacher checkpoint."""
    from conftest import tiny_nuscenes

    from xmkd.engine.checkpoint import save

    tmp = tmp_path_factory.mktemp("parity")
    data = tiny_nuscenes(tmp / "nus", frames=2, frames_per_scene=2, image_size=(64, 36), sweeps=True,
                         cameras=("CAM_FRONT", "CAM_BACK"))
    cfg = load_config(REPO / "configs" / "u2mkd" / "synthetic.yaml", SMALL, schema=get_recipe("u2mkd").schema)
    save(tmp / "t.pt", {"models": {"net": SparseUNet(4, 16, cfg.model.teacher.backbone).state_dict()}})
    return [*SMALL, f"data.root={data}", f"model.teacher.checkpoint={tmp / 't.pt'}"]


@pytest.fixture(scope="module")
def kd_recipe(kd_overrides, tmp_path_factory):
    recipe_cls = get_recipe("u2mkd")
    cfg = load_config(REPO / "configs" / "u2mkd" / "synthetic.yaml",
                      [*kd_overrides, f"output_dir={tmp_path_factory.mktemp('runs')}"], schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    recipe.nets["teacher"].eval().requires_grad_(False)
    return recipe


def test_trainer_converts_the_trained_nets_to_syncbn_when_ddp_is_on(kd_overrides, tmp_path, monkeypatch):
    # SyncBatchNorm cannot run on CPU across processes; the conversion is what is checked, DDP itself is stubbed
    from xmkd.engine import distributed
    from xmkd.engine.trainer import Trainer

    class StubDDP(torch.nn.Module):
        def __init__(self, net, **kw):
            super().__init__()
            self.module = net

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", StubDDP)
    for sync in (True, False):
        cfg = load_config(REPO / "configs" / "u2mkd" / "synthetic.yaml",
                          [*kd_overrides, f"output_dir={tmp_path}", f"name=sync{sync}", f"train.sync_bn={sync}",
                           "data.batch_size=1"],
                          schema=get_recipe("u2mkd").schema)
        nets = Trainer(cfg, get_recipe("u2mkd"), progress=False).recipe.nets
        for name in ("student", "adapter"):
            types = {type(m) for m in nets[name].module.modules()
                     if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
            assert types == ({torch.nn.SyncBatchNorm} if sync else {torch.nn.BatchNorm1d, torch.nn.BatchNorm2d}
                             if name == "student" else {torch.nn.BatchNorm1d})
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in nets["teacher"].modules())  # frozen


def test_feature_imitation_uses_the_pre_fusion_stage4_lidar_features(kd_recipe):
    recipe = kd_recipe
    sample = recipe.train_dataset()[(0, 0)]
    assert sample["t_features"].shape[1] == 4 and len(sample["t_xyz"]) > len(sample["xyz"])  # x y z i; sweeps
    batch = recipe.collate([sample])
    seen = {}
    student, teacher = recipe.nets["student"], recipe.nets["teacher"]

    def keep(name):
        def hook(module, args, out):
            seen[name] = args[0]  # returns None: the output stays
        return hook

    hooks = [student.c2l[3].register_forward_hook(keep("c2l_in")),
             recipe.nets["adapter"].register_forward_hook(keep("adapter_in"))]
    losses = recipe.training_step(batch, 0)
    for h in hooks:
        h.remove()
    sel = batch["kd_index"] >= 0
    # student: the stage-4 LiDAR point features C2L receives, i.e. before camera fusion and without the point MLP
    assert torch.equal(seen["adapter_in"], seen["c2l_in"][batch["student"]["point_voxel"]][sel])
    # teacher: its stage-4 voxel features (after the last SphereFormer block) devoxelised, no point-branch term
    with torch.no_grad():
        t_out = teacher(batch["teacher"])
    assert not torch.allclose(t_out["stage4"], t_out["bottleneck"])
    t_pc = teacher.point_coords(batch["teacher"])
    x4 = teacher.encode_stage(3, teacher.encode_stage(2, teacher.encode_stage(1, teacher.encode_stage(
        0, teacher.stem(teacher.input_tensor(batch["teacher"])), batch["teacher"]), batch["teacher"]),
        batch["teacher"]), batch["teacher"])
    assert torch.allclose(t_out["stage4"], teacher.devoxelize(x4, t_pc, 16), atol=1e-6)
    assert torch.isfinite(losses["feat"]) and losses["feat"] > 0


def test_pixel_head_order_switch_runs_the_head_at_the_image_resolution_as_released(kd_recipe):
    # release: decoder features upsampled to the image, then BN-ReLU-1x1 (tsd_full.py:551-556); xmkd default: the
    # head at the decoder's resolution, its logits upsampled. Same parameters either way.
    batch = kd_recipe.collate([kd_recipe.train_dataset()[(0, 0)]])["student"]
    batch = {**batch, "images": batch["images"].float()}
    m, size = kd_recipe.cfg.model, tuple(batch["images"].shape[-2:])
    seen = {}
    for at_image in (False, True):
        net = U2MKDStudent(4, 16, m.backbone, m.image_depth, m.image_stem_stride, m.decoder_width,
                           pixel_head_at_image=at_image)
        net.load_state_dict(kd_recipe.nets["student"].state_dict())
        hook = net.camera.head.register_forward_hook(lambda mod, args, out, k=at_image: seen.update({k: args[0].shape}))
        with torch.no_grad():
            assert tuple(net.eval()(batch)["pixel_logits"].shape[-2:]) == size
        hook.remove()
    assert tuple(seen[True][-2:]) == size and seen[True][1] == m.decoder_width
    assert tuple(seen[False][-2:]) != size


def test_camera_only_baseline_uses_the_configs_pixel_head_order():
    seen = {}
    for name, at_image in (("camera_seg/nuscenes", True), ("camera_seg/synthetic", False)):
        cfg = load_config(REPO / "configs" / f"{name}.yaml", ["model.image_stem_stride=2"],
                          schema=get_recipe("camera_seg").schema)
        recipe = get_recipe("camera_seg")(cfg, torch.device("cpu"))
        recipe.build()
        net = recipe.nets["camera"].eval()
        net.head.register_forward_hook(lambda mod, args, out: seen.update(size=tuple(args[0].shape[-2:])))
        with torch.no_grad():
            assert net(torch.rand(1, 3, 72, 128) * 255).shape[-2:] == (72, 128)
        assert (seen["size"] == (72, 128)) is at_image, name


def test_voxel_feature_switch_reaches_the_student_and_teacher_batches(kd_recipe, kd_overrides, tmp_path):
    # evaluation sample: every student point kept, so voxels hold several points; the teacher adds sweeps
    sample = kd_recipe.val_dataset()[0]
    sample.update({k: v for k, v in kd_recipe.train_dataset()[(0, 0)].items() if k.startswith("t_")})
    for mode in ("first", "mean"):
        cfg = load_config(REPO / "configs" / "u2mkd" / "synthetic.yaml",
                          [*kd_overrides, f"output_dir={tmp_path}", f"model.voxel_feature={mode}",
                           f"model.teacher.voxel_feature={mode}"], schema=get_recipe("u2mkd").schema)
        batch = get_recipe("u2mkd")(cfg, torch.device("cpu")).collate([sample])
        seg_cfg = load_config(REPO / "configs" / "lidar_seg" / "synthetic.yaml", [f"model.voxel_feature={mode}"],
                              schema=get_recipe("lidar_seg").schema)  # the teacher's own recipe
        seg = get_recipe("lidar_seg")(seg_cfg, torch.device("cpu")).collate([{
            "xyz": sample["t_xyz"], "features": sample["t_features"], "labels": np.zeros(len(sample["t_xyz"]))}])
        for b, feats in ((batch["student"], sample["features"]), (batch["teacher"], sample["t_features"]),
                         (seg, sample["t_features"])):
            pv = b["point_voxel"].numpy()
            assert np.bincount(pv).max() > 1  # some voxel holds several points
            firsts = np.unique(pv, return_index=True)[1]
            ref = feats[firsts] if mode == "first" else \
                np.stack([np.bincount(pv, weights=feats[:, c]) for c in range(feats.shape[1])], 1) / \
                np.bincount(pv)[:, None]
            assert np.allclose(b["voxel_features"].numpy(), ref, atol=1e-5), mode


def test_c2l_samples_the_l2c_fused_pre_relu_stage_features(kd_recipe):
    """Per stage: L2C fuses into the ResNet stage's pre-ReLU output (release swiftnet.py:47-50 `skip`, tsd_full.py
    :443; stage 4 after the SPP), and C2L samples L2C's fused map, not the map before L2C (tsd_full.py:479-495)."""
    student = kd_recipe.nets["student"].eval()
    batch = kd_recipe.collate([kd_recipe.train_dataset()[(0, 0)]])["student"]
    batch = {**batch, "images": batch["images"].float()}
    rn, seen = student.camera.backbone, {}
    layers = (rn.layer1, rn.layer2, rn.layer3, rn.layer4)

    def keep(name):
        def hook(mod, args, out=None):
            seen[name] = (args, out)
        return hook

    hooks = [student.camera.spp.register_forward_hook(keep("spp"))]
    for i in range(4):
        hooks += [layers[i][0].register_forward_pre_hook(keep(f"stage_in{i}")),
                  student.l2c[i].register_forward_hook(keep(f"l2c{i}")),
                  student.c2l[i].register_forward_hook(keep(f"c2l{i}"))]
    with torch.no_grad():
        student(batch)
        for h in hooks:
            h.remove()
        for i in range(4):
            (skip, *_), (relu_fused, fused) = seen[f"l2c{i}"]
            c2l_img = seen[f"c2l{i}"][0][1]
            assert torch.equal(c2l_img, fused) and not torch.allclose(c2l_img, skip)  # L2C's output, not its input
            assert not torch.equal(c2l_img, relu_fused)  # the fused map itself, before the next stage's ReLU
            x = seen[f"stage_in{i}"][0][0]
            if i:  # the next ResNet stage runs on ReLU(fused)
                assert torch.equal(x, seen[f"l2c{i - 1}"][1][0])
            pre = layers[i][-1].preact(layers[i][:-1](x))  # the last block's output before its ReLU
            assert (pre < 0).any()
            if i == 3:
                assert torch.allclose(seen["spp"][0][0], pre, atol=1e-5) and torch.equal(skip, seen["spp"][1])
            else:
                assert torch.allclose(skip, pre, atol=1e-5)
