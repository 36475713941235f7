"""The CMKD / HSRDN student's parts against the released code: SCNet's parameter counts, the DeepLabV3 weights,
the frustum-to-voxel geometry, the image + points + boxes flip, the response weights and the relation nodes."""

import math

import numpy as np
import pytest
import torch

from xmkd.data.frame import Boxes, CameraView, Frame
from xmkd.data.image_flip import flip_frame, image_flip_transform
from xmkd.distill.relations import bev_nodes, within_sample_relations
from xmkd.geometry.camera import project_points
from xmkd.geometry.transforms import transform_points
from xmkd.models.det.frustum import (
    cell_depth_histograms,
    cell_depths,
    depth_bin_targets,
    frustum_to_voxels,
    lid_to_depth,
)
from xmkd.models.det.mono import MonoConfig, MonoDetector
from xmkd.models.det.scnet import SCNet
from xmkd.models.det.second import SecondConfig
from xmkd.models.image.deeplab import DeepLabHead, image_weights
from xmkd.models.image.resnet import ResNet
from xmkd.recipes.hsrdn import response_weights


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_scnet_has_the_released_parameter_counts():
    # Derived from scnet.py of both releases for C = 128 (the KITTI BEV width), g = C / 2 = 64, per SCBottleneck:
    # conv1_a + conv1_b (1x1, no bias) 2 * 128 * 64 = 16,384; their BNs 4 * 64 = 256;
    # k1, k2, k3, k4 (3x3 with bias + BN) 4 * (9 * 64^2 + 64 + 128) = 148,224; conv3 (1x1) 128 * 128 = 16,384;
    # bn3 256 -> 181,504. HSRDN's SE gate adds conv 64 -> 4 (+ bias) and 4 -> 64 (+ bias): 260 + 320 = 580 (and
    # keeps the unused k2). NUM_BLOCKS 5 builds range(1, 5) = 4 blocks.
    assert n_params(SCNet(128, 4, "sc")) == 4 * 181_504 == 726_016
    assert n_params(SCNet(128, 4, "se")) == 4 * 182_084 == 728_336
    # the CPU-scale width 64 (g = 32): 2*64*32 + 4*32 + 4*(9*32^2 + 96) + 64*64 + 2*64 = 45,696 (SE: + 2*32*2 + 2 + 32)
    assert n_params(SCNet(64, 4, "sc")) == 4 * 45_696 and n_params(SCNet(64, 4, "se")) == 4 * (45_696 + 162)


def test_kitti_configs_and_models_pin_the_released_values():
    from pathlib import Path

    from xmkd.config import load_config, peek_recipe
    from xmkd.io import architecture_only
    from xmkd.models.det.scnet import SCConv
    from xmkd.recipes import get_recipe

    configs = Path(__file__).resolve().parents[1] / "configs"

    def config(name: str):
        recipe = get_recipe(peek_recipe(configs / name))
        return recipe, load_config(configs / name, [], schema=recipe.schema)

    _, teacher = config("lidar_det/kitti.yaml")
    assert (teacher.data.voxel_size, teacher.data.voxel_z) == (0.04, 0.1)  # second_teacher.yaml VOXEL_SIZE
    assert teacher.model.max_detections == 500 and list(teacher.model.max_voxels) == [20000, 40000]
    assert teacher.model.redraw_empty
    for method in ("hsrdn", "cmkd"):
        (_, bev), (recipe, det) = config(f"{method}/kitti_bev.yaml"), config(f"{method}/kitti.yaml")
        for c in (bev, det):  # cmkd_kitti_R50_scd_{bev,V2}.yaml
            assert (c.data.voxel_size, c.data.voxel_z) == (0.04, 0.1)
            assert list(c.data.point_range) == [2.0, -30.08, -3.0, 46.8, 30.08, 1.0]
            assert list(c.model.max_voxels) == [16000, 40000] and c.model.max_detections == 500
            assert c.model.depth_alpha == 0.25 and c.model.depth_gamma == 2.0 and c.model.depth_cells == "all"
            assert c.model.depth_maps == "depth_2" and c.model.image_flip and c.model.redraw_empty
        assert (bev.model.stage, bev.train.epochs, bev.train.optimizer.lr) == ("bev", 60, 0.002)
        assert (det.model.stage, det.train.epochs, det.train.optimizer.lr) == ("det", 20, 1e-4)
        assert det.model.reset_head and det.model.student.init == f"runs/{method}_kitti_bev/checkpoints/last.pt"
        r = recipe(det, torch.device("cpu"))
        with architecture_only():  # no teacher, stage-1 or DeepLabV3 file is read
            r.build()
        student, gate = r.nets["net"], {"hsrdn": "se", "cmkd": "sc"}[method]
        assert r.grid == [1120, 1504, 40] and student.grid == (10, 188, 140)  # 0.04 m voxels, 140 x 188 BEV cells
        assert {m.gate for m in student.modules() if isinstance(m, SCConv)} == {gate}  # HSRDN: SE, CMKD: SC
        assert n_params(student.scnet) == {"se": 728_336, "sc": 726_016}[gate]
        assert n_params(r.nets["teacher"]) == 5_684_840  # docs/hsrdn.md: the whole KITTI teacher
        assert student.cfg.depth == "resnet50" and student.cfg.depth_bins == 120 and student.stride == 8


def test_scnet_gates_behave_as_released():
    torch.manual_seed(0)
    net = SCNet(64, 1, "se").eval()
    x = torch.rand(2, 64, 8, 8)
    y = net(x)
    assert y.shape == x.shape and (y >= 0).all()
    # HSRDN's gate is normalised over the batch: a sample's output depends on its batch-mates (as released)
    assert not torch.allclose(net(x[:1]), y[:1])
    sc = SCNet(64, 1, "sc").eval()
    assert torch.allclose(sc(x[:1]), sc(x)[:1], atol=1e-6)  # CMKD's gate is per sample
    with pytest.raises(ValueError, match="gate"):
        SCNet(64, 1, "xx")


def test_hsrdn_and_cmkd_scnets_of_one_seed_differ_only_in_the_gate():
    # the SE gate draws from a fork of the RNG: the shared weights, and whatever is built or drawn after the block
    # (the rest of the student, training's dropout masks), are the same in an HSRDN and a CMKD student of one seed
    nets, after = {}, {}
    for gate in ("sc", "se"):
        torch.manual_seed(3)
        nets[gate] = SCNet(64, 4, gate)
        after[gate] = (torch.nn.Conv2d(64, 8, 3).weight.detach(), torch.rand(5))
    sc, se = nets["sc"].state_dict(), nets["se"].state_dict()
    assert set(se) - set(sc) and all(".se." in k for k in set(se) - set(sc))
    assert all(torch.equal(sc[k], se[k]) for k in sc)
    assert all(torch.equal(a, b) for a, b in zip(after["sc"], after["se"]))
    # the SE convs have a stream of their own: not the numbers the next layer (conv3) draws, rescaled
    w_se = se["0.scconv.se.1.weight"].flatten()
    w_next = se["0.conv3.weight"].flatten()[:len(w_se)]
    assert abs(torch.corrcoef(torch.stack([w_se, w_next]))[0, 1]) < 0.5
    # "inline" draws them in line, as released (and as the runs before the switch): the rest then differs
    torch.manual_seed(3)
    inline = SCNet(64, 4, "se", se_init="inline").state_dict()
    assert not all(torch.equal(sc[k], inline[k]) for k in sc)
    with pytest.raises(ValueError, match="se_init"):
        SCNet(64, 1, "se", se_init="later")


def torchvision_deeplabv3_resnet50_state(classes: int = 21) -> dict[str, torch.Tensor]:
    """A state dict with the names and shapes of torchvision's `deeplabv3_resnet50(aux_loss=True)` (what
    deeplabv3_resnet50_coco-cd0a2569.pth holds), random values; the classifier keys are written out from
    torchvision/models/segmentation/deeplabv3.py and fcn.py."""
    g = torch.Generator().manual_seed(0)
    state = {f"backbone.{k}": torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
             for k, v in ResNet("resnet50", dilate=(False, True, True)).state_dict().items() if not k.startswith("fc.")}

    def bn(prefix: str, c: int) -> None:
        state.update({f"{prefix}.weight": torch.rand(c, generator=g), f"{prefix}.bias": torch.randn(c, generator=g),
                      f"{prefix}.running_mean": torch.randn(c, generator=g), f"{prefix}.running_var": torch.rand(c),
                      f"{prefix}.num_batches_tracked": torch.tensor(0)})

    def conv(key: str, *shape: int) -> None:
        state[key] = torch.randn(*shape, generator=g)

    conv("classifier.0.convs.0.0.weight", 256, 2048, 1, 1)
    bn("classifier.0.convs.0.1", 256)
    for i in (1, 2, 3):
        conv(f"classifier.0.convs.{i}.0.weight", 256, 2048, 3, 3)
        bn(f"classifier.0.convs.{i}.1", 256)
    conv("classifier.0.convs.4.1.weight", 256, 2048, 1, 1)
    bn("classifier.0.convs.4.2", 256)
    conv("classifier.0.project.0.weight", 256, 1280, 1, 1)
    bn("classifier.0.project.1", 256)
    conv("classifier.1.weight", 256, 256, 3, 3)
    bn("classifier.2", 256)
    conv("classifier.4.weight", classes, 256, 1, 1)
    conv("classifier.4.bias", classes)
    conv("aux_classifier.0.weight", 256, 1024, 3, 3)
    bn("aux_classifier.1", 256)
    conv("aux_classifier.4.weight", classes, 256, 1, 1)
    conv("aux_classifier.4.bias", classes)
    return state


def test_deeplabv3_resnet50_weights_load_into_the_student():
    state = torchvision_deeplabv3_resnet50_state()
    learnable = sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "tracked")))
    assert learnable == 42_004_074  # torchvision's documented num_params of deeplabv3_resnet50 (COCO, aux head)
    backbone, head = ResNet("resnet50", dilate=(False, True, True)), DeepLabHead(2048, 121)
    resnet, classifier, skipped = image_weights(state, backbone, head, "deeplab.pth")
    backbone.load_state_dict(resnet)
    head.load_state_dict(classifier)
    assert torch.equal(backbone.layer3[5].conv2.weight, state["backbone.layer3.5.conv2.weight"])
    assert torch.equal(backbone.bn1.running_mean, state["backbone.bn1.running_mean"])
    assert torch.equal(head[0].convs[2][0].weight, state["classifier.0.convs.2.0.weight"])
    assert torch.equal(head[0].convs[4][2].running_var, state["classifier.0.convs.4.2.running_var"])
    assert torch.equal(head[1].weight, state["classifier.1.weight"])
    # 21 VOC classes vs 121 depth bins: the last conv stays freshly initialised, the auxiliary head is not used
    assert head[4].weight.shape == (121, 256, 1, 1)
    assert set(skipped) == {"classifier.4.weight", "classifier.4.bias"} | {k for k in state if "aux_" in k}
    # the depth head is DeepLabV3's: the same parameter count as torchvision's classifier at 121 classes
    assert n_params(head) == 15_535_104 + 589_824 + 512 + 256 * 121 + 121
    # a plain ImageNet ResNet file goes to the backbone whole; a DeepLab file without layer4 is refused by name
    plain = ResNet("resnet18").state_dict()
    assert image_weights(plain, ResNet("resnet18"), None, "r18.pth") == (plain, None, [])
    from xmkd.errors import XmkdError

    broken = {k: v for k, v in state.items() if not k.startswith("backbone.layer4")}
    with pytest.raises(XmkdError, match=r"deeplab.pth: .*missing backbone.layer4"):
        image_weights(broken, backbone, head, "deeplab.pth")


def test_a_deeplabv3_file_named_by_the_kitti_config_loads_into_the_students_recipe(tmp_path):
    from pathlib import Path

    from xmkd.config import load_config
    from xmkd.recipes import get_recipe

    state = torchvision_deeplabv3_resnet50_state()
    path = tmp_path / "deeplabv3_resnet50_coco-cd0a2569.pth"
    torch.save(state, path)
    recipe_cls = get_recipe("hsrdn")
    no_teacher = [f"model.weights.{k}=0" for k in ("bev", "response_cls", "response_box", "response_dir", "distance",
                                                    "angle")]
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "hsrdn" / "kitti_bev.yaml", [
        f"model.student.image_pretrained={path}", "model.teacher_checkpoint=''", "model.weights.gt=1", *no_teacher],
        schema=recipe_cls.schema)
    recipe = recipe_cls(cfg, torch.device("cpu"))
    recipe.build()
    student = recipe.nets["net"]
    assert torch.equal(student.backbone.layer3[5].conv2.weight, state["backbone.layer3.5.conv2.weight"])
    assert torch.equal(student.backbone.bn1.running_mean, state["backbone.bn1.running_mean"])
    assert torch.equal(student.depth_head[0].convs[2][0].weight, state["classifier.0.convs.2.0.weight"])
    assert torch.equal(student.depth_head[1].weight, state["classifier.1.weight"])
    assert student.depth_head[4].weight.shape == (121, 256, 1, 1)  # the depth bins' conv: not the 21 classes'


def test_a_point_lands_on_the_cell_and_bin_its_depth_target_names():
    stride, d, dmin, dmax = 8, 40, 2.0, 50.0
    hf, wf = 6, 10
    K = torch.tensor([[60.0, 0, 37.0], [0, 60.0, 21.0], [0, 0, 1]])
    T = torch.tensor([[0.0, -1, 0, 0], [0, 0, -1, 0.3], [1, 0, 0, 0]])  # LiDAR x forward -> camera z
    P = (K @ T)[None]
    for col, row, b in ((3, 2, 7), (0, 0, 0), (9, 5, 39), (6, 4, 22)):
        # the point seen at the centre pixel of cell (row, col), at the centre depth of LID bin b
        depth = float(lid_to_depth(torch.tensor(b + 0.5), dmin, dmax, d))
        u, v = (col + 0.5) * stride, (row + 0.5) * stride
        xc, yc = (u - 37.0) / 60.0 * depth, (v - 21.0) / 60.0 * depth
        point = torch.tensor([depth, -xc, -(yc - 0.3)])
        # ... its depth target names exactly that cell and bin
        uv = project_points(point[None].numpy().astype(np.float64), K.numpy(), np.vstack([T.numpy(), [0, 0, 0, 1]]),
                            (wf * stride, hf * stride))
        target = cell_depths(uv.uv, uv.depth, (wf * stride, hf * stride), stride)
        assert list(zip(*np.nonzero(target))) == [(row, col)] and math.isclose(target[row, col], depth, rel_tol=1e-5)
        assert int(depth_bin_targets(torch.tensor([depth]), dmin, dmax, d)) == b
        # ... and the lifting reads exactly that frustum entry
        frustum = torch.zeros(1, 1, d, hf, wf)
        frustum[0, 0, b, row, col] = 1.0
        out = frustum_to_voxels(frustum, point.view(1, 1, 1, 3), P, stride, dmin, dmax)
        assert torch.isclose(out.squeeze(), torch.tensor(1.0), atol=1e-4), (col, row, b, float(out))
        # the release's CaDDN normalisation reads far bins partly from their neighbours ((b + 1/2) / (D - 1) bins)
        caddn = frustum_to_voxels(frustum, point.view(1, 1, 1, 3), P, stride, dmin, dmax, "caddn",
                                  (wf * stride, hf * stride))
        assert float(caddn) < 0.9 if b else float(caddn) > 0.9
    # a voxel behind the camera reads nothing
    assert frustum_to_voxels(torch.ones(1, 1, d, hf, wf), torch.tensor([[[[-5.0, 0, 0]]]]), P, stride, dmin,
                             dmax).abs().sum() == 0


def test_cell_depths_average_the_pixels_of_a_cell_or_keep_the_nearest():
    uv = np.array([[1.5, 1.5], [1.7, 1.2], [5.0, 2.0], [9.0, 1.0]])  # two points in pixel (1, 1), one more in cell 0
    depth = np.array([10.0, 8.0, 12.0, 30.0])
    mean = cell_depths(uv, depth, (16, 8), 8, "mean")
    assert mean.shape == (1, 2) and mean[0, 0] == pytest.approx(10.0) and mean[0, 1] == pytest.approx(30.0)
    assert cell_depths(uv, depth, (16, 8), 8, "nearest")[0, 0] == pytest.approx(8.0)


def test_cell_depth_histograms_share_each_cells_pixels_among_the_depth_bins():
    # cell 0: pixel (1, 1) holds two points (the nearer, 8 m, is the pixel's depth), pixels (5, 2) and (3, 3) 12 m and
    # 60 m (beyond depth_max: the last bin); cell 1: one pixel at 30 m; cell 2 (a 24-pixel-wide image): no pixel
    uv = np.array([[1.5, 1.5], [1.7, 1.2], [5.0, 2.0], [3.2, 3.9], [9.0, 1.0]])
    depth = np.array([10.0, 8.0, 12.0, 60.0, 30.0])
    d = 20
    shares = cell_depth_histograms(uv, depth, (24, 8), 8, 2.0, 46.8, d)
    assert shares.shape == (d + 1, 1, 3) and shares.dtype == np.float32
    bins = depth_bin_targets(torch.tensor([8.0, 12.0, 60.0, 30.0]), 2.0, 46.8, d).tolist()
    assert bins[2] == d and len({*bins[:2], d}) == 3  # 8 m and 12 m in two different bins, 60 m out of range
    expect = np.zeros((d + 1, 1, 3), np.float32)
    expect[bins[0], 0, 0] = expect[bins[1], 0, 0] = expect[d, 0, 0] = 1 / 3
    expect[bins[3], 0, 1] = 1.0
    assert np.allclose(shares, expect)  # cell 2: all zeros, so it lifts nothing, as the one-hot oracle's empty cells


def test_histogram_oracle_lifts_as_the_one_hot_oracle_where_every_cell_is_one_depth():
    det = SecondConfig(bev_channels=16, bev_layers=[1, 1], bev_filters=[16, 32], up_filters=[16, 16])
    nets = {}
    for bins in ("cell", "histogram"):
        torch.manual_seed(0)
        cfg = MonoConfig(depth="resnet18", depth_bins=20, frustum_channels=8, grid_z=4, scnet_blocks=0,
                         oracle_depth=True, oracle_bins=bins)
        nets[bins] = MonoDetector(cfg, det, 6, 3, [0.0, -12.8, -3.0, 25.6, 12.8, 1.0], (16, 16)).eval()
    K = torch.tensor([[100.0, 0, 64], [0, 100.0, 24], [0, 0, 1]])
    T = torch.tensor([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]])
    cell = torch.rand(1, 6, 16) * 30 + 3
    cell[0, 0, :4] = 0  # cells without a point
    one_hot = torch.nn.functional.one_hot(depth_bin_targets(cell, 2.0, 46.8, 20), 21).permute(0, 3, 1, 2).float()
    one_hot[0, :, 0, :4] = 0  # a histogram's empty cell: no pixel, no share
    batch = {"images": torch.randint(0, 255, (1, 3, 48, 128), dtype=torch.uint8),
             "lidar_to_image": (K @ T)[None], "depth": cell, "depth_shares": one_hot}
    with torch.no_grad():
        a, b = nets["cell"](batch, head=False)["bev"], nets["histogram"](batch, head=False)["bev"]
        assert torch.allclose(a, b) and a.abs().sum() > 0
        # half of one cell's pixels 10 bins deeper: the histogram oracle lifts something else
        split = one_hot.clone()
        split[0, :, 3, 8] *= 0.5
        split[0, (one_hot[0, :, 3, 8].argmax() + 10) % 20, 3, 8] += 0.5
        assert not torch.allclose(nets["histogram"]({**batch, "depth_shares": split}, head=False)["bev"], b)
    with pytest.raises(ValueError, match="oracle_bins 'histogram' needs .*depth_shares"):
        nets["histogram"]({k: v for k, v in batch.items() if k != "depth_shares"})
    with pytest.raises(ValueError, match="model.student.oracle_bins: expected one of"):
        MonoDetector(MonoConfig(depth="resnet18", oracle_depth=True, oracle_bins="soft"), det, 6, 3,
                     [0.0, -12.8, -3.0, 25.6, 12.8, 1.0], (16, 16))


def flip_scene():
    W, H = 200, 60
    K = np.array([[150.0, 0, 93.0], [0, 150.0, 28.0], [0, 0, 1]])  # principal point off the image centre
    a, b = 0.05, 0.03  # the camera turned a little about its y and x axes, and offset from the LiDAR
    Ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    T = np.eye(4)
    T[:3, :3] = Rx @ Ry @ np.array([[0, -1.0, 0], [0, 0, -1.0], [1.0, 0, 0]])
    T[:3, 3] = [0.06, -0.1, -0.3]
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(5, 30, 500), rng.uniform(-8, 8, 500), rng.uniform(-2, 1, 500),
                           rng.random(500)]).astype(np.float32)
    box = np.array([[14.0, 2.5, -0.8, 4.0, 1.8, 1.5, 0.4]])
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    cam = CameraView("image_2", image, K, T)
    return Frame("f", pts, cameras={"image_2": cam}, boxes=Boxes(box, np.array(["Car"]))), W


def test_the_image_flip_moves_points_and_boxes_with_the_image():
    from xmkd.geometry.boxes import points_in_boxes

    frame, W = flip_scene()
    cam = frame.cameras["image_2"]
    flipped = flip_frame(frame, "image_2")
    before = project_points(frame.points, cam.K, cam.T_cam_lidar, (W, 60))
    after = project_points(flipped.points, cam.K, cam.T_cam_lidar, (W, 60))
    assert np.allclose(after.uv[:, 0], W - before.uv[:, 0], atol=1e-3) and np.allclose(after.uv[:, 1], before.uv[:, 1],
                                                                                       atol=1e-3)
    assert np.allclose(after.depth, before.depth, atol=1e-4)
    assert np.array_equal(flipped.cameras["image_2"].image, cam.image[:, ::-1])
    assert np.array_equal(flipped.points[:, 3], frame.points[:, 3])  # intensity kept
    # the box still holds its points (a mirror with a small shear: the box follows it to within centimetres)
    inside = points_in_boxes(frame.points[:, :3], frame.boxes.boxes)[:, 0]
    assert inside.sum() > 3
    shrunk = flipped.boxes.boxes.copy()
    shrunk[:, 3:6] += 0.1
    assert points_in_boxes(flipped.points[inside, :3], shrunk)[:, 0].all()
    # the box centre projects to the mirrored pixel; flipping twice is the identity
    c0 = project_points(frame.boxes.boxes[:, :3], cam.K, cam.T_cam_lidar, (W, 60)).uv
    c1 = project_points(flipped.boxes.boxes[:, :3], cam.K, cam.T_cam_lidar, (W, 60)).uv
    assert np.allclose(c1[:, 0], W - c0[:, 0], atol=1e-3)
    M = image_flip_transform(cam.K, cam.T_cam_lidar, W)
    assert np.allclose(M @ M, np.eye(4), atol=1e-9)
    twice = flip_frame(flipped, "image_2")
    assert np.allclose(twice.points, frame.points, atol=1e-4) and np.allclose(twice.boxes.boxes, frame.boxes.boxes,
                                                                               atol=1e-5)
    # with the principal point at the centre and camera x = LiDAR -y, the flip is y -> -y and yaw -> -yaw (release)
    K2 = cam.K.copy()
    K2[0, 2] = W / 2
    T2 = np.array([[0, -1.0, 0, 0], [0, 0, -1.0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
    assert np.allclose(image_flip_transform(K2, T2, W), np.diag([1.0, -1, 1, 1]), atol=1e-12)
    assert np.allclose(transform_points(np.diag([1.0, -1, 1, 1]), frame.points)[:, 1], -frame.points[:, 1])
    # the release's heading (model.flip_heading=negate): yaw -> -yaw, the same centres
    negated = flip_frame(frame, "image_2", heading="negate").boxes.boxes
    assert np.allclose(negated[:, 6], -frame.boxes.boxes[:, 6])
    assert np.allclose(negated[:, :6], flipped.boxes.boxes[:, :6])
    assert not np.allclose(negated[:, 6], flipped.boxes.boxes[:, 6], atol=1e-3)  # principal point off W / 2 here
    with pytest.raises(ValueError, match="flip heading"):
        flip_frame(frame, "image_2", heading="mirror")


def test_response_weights_vanish_where_the_teacher_scores_sum_to_at_most_0_1():
    prob = torch.tensor([[[0.05, 0.04, 0.01], [0.3, 0.1, 0.0], [0.02, 0.02, 0.02], [0.09, 0.0, 0.02]],
                         [[0.5, 0.4, 0.1], [0.0, 0.0, 0.0], [0.6, 0.0, 0.0], [0.0, 0.11, 0.0]]])
    w = response_weights(prob, 0.1)
    # summed scores 0.10 0.40 0.06 0.11 | 1.0 0.0 0.6 0.11: only sums strictly above 0.1 count
    assert torch.allclose(w[0], torch.tensor([0.0, 0.4 / 2, 0.0, 0.11 / 2]))
    assert torch.allclose(w[1], torch.tensor([1.0 / 3, 0.0, 0.6 / 3, 0.11 / 3]))


def test_response_and_depth_losses_are_the_released_formulas():
    from types import SimpleNamespace

    from xmkd.recipes.hsrdn import DistillWeights, HSRDNRecipe, focal_ce

    g = torch.Generator().manual_seed(0)
    b, ny, nx, a, classes = 2, 3, 4, 2, 3
    student = {"cls": torch.randn(b, ny, nx, a, classes, generator=g), "box": torch.randn(b, ny, nx, a, 7, generator=g),
               "dir": torch.randn(b, ny, nx, a, 2, generator=g)}
    teacher = {"cls": torch.randn(b, ny, nx, a, classes, generator=g) * 3 - 3,
               "box": torch.randn(b, ny, nx, a, 7, generator=g), "dir": torch.randn(b, ny, nx, a, 2, generator=g)}
    cfg = SimpleNamespace(model=SimpleNamespace(weights=DistillWeights(), response_threshold=0.1))
    got = HSRDNRecipe.response_losses(SimpleNamespace(cfg=cfg), student, teacher)
    # written from anchor_head_single_cmkd_v2.py:79-155 and loss_utils.py (QualityFocalLoss_no_reduction,
    # WeightedSmoothL1Loss beta 1/9, WeightedCrossEntropyLoss on the teacher's argmax bin), anchor by anchor
    s_cls, t = student["cls"].reshape(b, -1, classes), teacher["cls"].sigmoid().reshape(b, -1, classes)
    s_box, t_box = student["box"].reshape(b, -1, 7), teacher["box"].reshape(b, -1, 7)
    s_dir, t_dir = student["dir"].reshape(b, -1, 2), teacher["dir"].reshape(b, -1, 2)
    cls = box = direction = 0.0
    for i in range(b):
        for c in range(classes):
            norm = max(float((t[i, :, c] > 0.1).sum()), 1.0)
            for n in range(s_cls.shape[1]):
                x, y = float(s_cls[i, n, c]), float(t[i, n, c])
                p = 1 / (1 + math.exp(-x))
                cls += (max(x, 0) - x * y + math.log1p(math.exp(-abs(x)))) * abs(p - y) ** 2 / norm
        total = t[i].sum(-1)
        count = max(float((total > 0.1).sum()), 1.0)
        for n in range(s_box.shape[1]):
            if total[n] <= 0.1:
                continue
            w = float(total[n]) / count
            diff = (s_box[i, n] - t_box[i, n]).tolist()
            ra, rb = float(s_box[i, n, 6]), float(t_box[i, n, 6])
            diff[6] = math.sin(ra) * math.cos(rb) - math.cos(ra) * math.sin(rb)  # add_sin_difference
            box += w * sum(0.5 * d * d * 9 if abs(d) < 1 / 9 else abs(d) - 0.5 / 9 for d in diff)
            logits = s_dir[i, n].tolist()
            target = int(t_dir[i, n].argmax())
            direction += w * (math.log(sum(math.exp(v) for v in logits)) - logits[target])
    assert math.isclose(float(got["resp_cls"]), 2.0 * cls, rel_tol=1e-4)
    assert math.isclose(float(got["resp_box"]), 2.0 * box / b, rel_tol=1e-4)
    assert math.isclose(float(got["resp_dir"]), 0.4 * direction / b, rel_tol=1e-4)
    # kornia's FocalLoss(alpha 0.25, gamma 2), mean over cells: -alpha (1 - p_t)^2 log p_t
    logits, target = torch.randn(5, 4, generator=g), torch.tensor([0, 3, 1, 1, 2])
    p_t = logits.softmax(1)[torch.arange(5), target]
    assert torch.isclose(focal_ce(logits, target), (-0.25 * (1 - p_t) ** 2 * p_t.log()).mean())


def test_relation_nodes_are_the_teachers_foreground_cells_only():
    torch.manual_seed(0)
    s, t = torch.randn(2, 8, 6, 7, requires_grad=True), torch.randn(2, 8, 6, 7)
    score = torch.full((2, 6, 7), 0.05)  # sigmoid scores are never 0: a filter at 0 would keep every cell
    score[0, 1, 2], score[0, 3, 4], score[0, 5, 6], score[0, 0, 0] = 0.9, 0.5, 0.2, 0.1
    score[1, 2, 2] = 0.7
    nodes = bev_nodes(s, t, score, max_nodes=64, min_weight=0.1)
    assert [len(n[0]) for n in nodes] == [4, 1]
    assert torch.equal(nodes[0][1][0], t[0, :, 1, 2]) and torch.equal(nodes[0][1][3], t[0, :, 0, 0])
    assert [len(n[0]) for n in bev_nodes(s, t, score, max_nodes=2)] == [2, 1]
    # sample 1 has one node: no relation, sample 0 carries the loss and its gradient
    losses = within_sample_relations(s, t, score, 64, 0.1, 0.1)
    sum(losses.values()).backward()
    assert losses["distance"] > 0 and s.grad[0].abs().sum() > 0 and s.grad[1].abs().sum() == 0


@pytest.mark.parametrize("options", [
    {"depth_head": "aspp", "feature_layer": 3, "scnet_gate": "se"},
    {"depth_head": "conv", "feature_layer": 4, "scnet_gate": "sc", "sampling": "caddn"},
    {"depth_head": "aspp", "dilate": [False, True, False], "scnet_gate": "se"},  # layer4 at stride 16, logits resized
    {"oracle_depth": True, "scnet_gate": "sc"},
    {"oracle_depth": True, "oracle_bins": "histogram", "scnet_gate": "sc"},
])
def test_student_forward_backward_on_cpu(options):
    det = SecondConfig(bev_channels=32, bev_layers=[1, 1], bev_filters=[32, 64], up_filters=[32, 32])
    cfg = MonoConfig(depth="resnet18", depth_bins=20, frustum_channels=8, grid_z=4, aspp_channels=16, scnet_blocks=2,
                     **options)
    model = MonoDetector(cfg, det, 6, 3, [0.0, -12.8, -3.0, 25.6, 12.8, 1.0], (16, 16))
    assert model.stride == 8
    K = torch.tensor([[100.0, 0, 64], [0, 100.0, 24], [0, 0, 1]])
    T = torch.tensor([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]])
    batch = {"images": torch.randint(0, 255, (2, 3, 48, 128), dtype=torch.uint8),
             "lidar_to_image": (K @ T)[None].repeat(2, 1, 1), "depth": torch.rand(2, 6, 16) * 30,
             "depth_shares": torch.rand(2, 21, 6, 16).softmax(1)}
    out = model(batch)
    assert out["bev"].shape == (2, 32, 16, 16) and out["cls"].shape == (2, 16, 16, 6, 3)
    loss = out["cls"].sum() + out["box"].sum() + out["bev"].sum()
    if not cfg.oracle_depth:
        assert out["depth_logits"].shape == (2, 21, 6, 16)
        loss = loss + out["depth_logits"].sum()
    loss.backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0 and model.scnet[0].conv3.weight.grad.abs().sum() > 0
    if not cfg.oracle_depth:
        assert next(model.depth_head.parameters()).grad.abs().sum() > 0
    assert "bev" in model(batch, head=False) and "cls" not in model(batch, head=False)
