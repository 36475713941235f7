"""The synthetic world: physical consistency, determinism, and the real-format writers."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from xmkd.cli import main
from xmkd.data.labels import get_label_space
from xmkd.data.readers.kitti_files import read_calib_file, read_label_file
from xmkd.data.readers.kitti_object import read_kitti_object_frame
from xmkd.data.synthetic import synth
from xmkd.data.synthetic.generate import generate_keyframes, keyframe_to_frame
from xmkd.data.synthetic.objects import CATEGORIES
from xmkd.data.synthetic.synth import SynthOptions, synthesize, synthesize_indexed
from xmkd.data.synthetic.world import parse_domain
from xmkd.errors import XmkdError
from xmkd.geometry.boxes import box_corners, points_in_boxes
from xmkd.geometry.camera import kitti_camera, pixel_indices, project_points

NUSC16 = get_label_space("nuscenes16")


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("preset", ["day", "night,city-b", "rig-b", "night,rig-b,city-b"])
def test_lidar_and_camera_labels_agree(preset):
    kf = next(generate_keyframes(3, 1, parse_domain(preset), 1, with_sweeps=False, image_size=(320, 180)))
    frame = keyframe_to_frame(kf, NUSC16)
    agree = total = 0
    for cam in frame.cameras.values():
        proj = project_points(frame.points, cam.K, cam.T_cam_lidar, cam.image_size)
        rc = pixel_indices(proj.uv[proj.visible])
        d = proj.depth[proj.visible]
        unoccluded = np.abs(cam.depth[rc[:, 0], rc[:, 1]] - d) < 0.05 + 0.02 * d  # the pixel sees this point
        pix = cam.labels[rc[:, 0], rc[:, 1]][unoccluded]
        pts = frame.labels[proj.visible][unoccluded]
        agree += int((pix == pts).sum())
        total += int(unoccluded.sum())
    assert total > 500
    assert agree / total >= 0.97, agree / total
    # Cameras see only part of what the LiDAR sees (rig-b has one front camera).
    in_any = np.zeros(frame.num_points, bool)
    for cam in frame.cameras.values():
        in_any |= project_points(frame.points, cam.K, cam.T_cam_lidar, cam.image_size).visible
    assert 0.05 < in_any.mean() < (1.0 if "rig-b" not in preset else 0.5)


def test_world_has_the_classes_the_methods_need():
    kf = next(generate_keyframes(0, 0, parse_domain("day"), 1, with_sweeps=False, image_size=(160, 90)))
    frame = keyframe_to_frame(kf, NUSC16)
    present = {NUSC16.class_names[c] for c in np.unique(frame.labels) if c != 255}
    assert {"driveable_surface", "sidewalk", "manmade", "vegetation", "car"} <= present
    kinds = {o.kind for o in kf.scene.objects}
    assert {"car", "pedestrian"} <= kinds and len(kinds) >= 5
    assert any(o.moving for o in kf.scene.objects) and any(not o.moving for o in kf.scene.objects)
    # Instances: every point of a thing carries its object's instance id.
    things = np.isin(frame.labels, [NUSC16.class_names.index(n) for n in ("car", "pedestrian", "truck", "bus")])
    assert np.all(frame.instance_ids[things] > 0)


def test_moving_objects_move_between_sweeps():
    kfs = list(generate_keyframes(0, 2, parse_domain("day"), 2, image_size=(64, 36), cameras=("CAM_FRONT",)))
    assert len(kfs[1].sweeps_before) == 9
    moving = [o for o in kfs[0].objects if o.moving]
    assert moving
    a = {o.instance_id: o.box_world for o in kfs[0].objects}
    b = {o.instance_id: o.box_world for o in kfs[1].objects}
    shift = np.hypot(*(b[moving[0].instance_id][:2] - a[moving[0].instance_id][:2]))
    assert np.isclose(shift, np.hypot(*moving[0].velocity) * 0.5)
    assert kfs[1].timestamp - kfs[0].timestamp == pytest.approx(0.5)


def test_nuscenes_output_loads_in_devkit_and_evaluates_to_one(tmp_path):
    nuscenes = pytest.importorskip("nuscenes")
    from nuscenes.eval.lidarseg.evaluate import LidarSegEval
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
    from nuscenes.utils.data_classes import LidarPointCloud

    root = tmp_path / "nus"
    summary = synthesize(SynthOptions(out=str(root), frames=4, frames_per_scene=1, image_size=(160, 90),
                                      val_fraction=0.5), progress=False)
    assert summary["scene_names"]["val"] == ["scene-0103", "scene-0916"]
    nusc = nuscenes.NuScenes("v1.0-mini", str(root), verbose=False)
    assert len(nusc.sample) == 4 and len(nusc.lidarseg) == 4 and len(nusc.sample_annotation) > 20
    sample = nusc.sample[0]
    assert set(sample["data"]) == {"LIDAR_TOP", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK",
                                   "CAM_BACK_LEFT", "CAM_BACK_RIGHT"}
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    assert lidar_sd["prev"] != ""  # sweeps precede the keyframe in the LIDAR_TOP chain
    # The ground truth evaluated against itself with the devkit's own evaluation gives mIoU 1.
    results = tmp_path / "results"
    (results / "lidarseg" / "mini_val").mkdir(parents=True)
    mapper = LidarsegClassMapper(nusc)
    for s in nusc.sample:
        sd = s["data"]["LIDAR_TOP"]
        fine = np.fromfile(root / nusc.get("lidarseg", sd)["filename"], np.uint8)
        coarse = mapper.convert_label(fine).astype(np.uint8)
        coarse[coarse == 0] = 1  # ignore points are not scored, but predictions must be 1..16
        coarse.tofile(results / "lidarseg" / "mini_val" / f"{sd}_lidarseg.bin")
    assert LidarSegEval(nusc, str(results), "mini_val", verbose=False).evaluate()["miou"] == pytest.approx(1.0)
    # The devkit's projection of the keyframe's points agrees with xmkd's.
    cam_token = sample["data"]["CAM_FRONT"]
    pts_dev, _, _ = nusc.explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"], cam_token)
    pc = LidarPointCloud.from_file(str(root / lidar_sd["filename"]))
    kf = next(generate_keyframes(0, 0, parse_domain("day"), 1, with_sweeps=False, image_size=(160, 90)))
    assert np.allclose(pc.points[:3].T, kf.sweep.scan.points[:, :3])
    proj = project_points(pc.points[:3].T, kf.K["CAM_FRONT"], kf.T_cam_lidar("CAM_FRONT"), (160, 90))
    # The devkit keeps 1 < u < W-1 and 1 < v < H-1; compare those points.
    sel = proj.visible & (proj.uv[:, 0] > 1) & (proj.uv[:, 0] < 159) & (proj.uv[:, 1] > 1) & (proj.uv[:, 1] < 89)
    assert np.allclose(np.sort(proj.uv[sel, 0]), np.sort(pts_dev[0]), atol=1e-3)


def test_kitti_object_output(tmp_path):
    root = tmp_path / "kitti"
    synthesize(SynthOptions(out=str(root), preset="rig-b", format="kitti", frames=3, frames_per_scene=3,
                            unlabelled=2), progress=False)
    ids = (root / "ImageSets" / "trainval.txt").read_text().split()
    assert ids == ["000000", "000001", "000002"]
    raw = (root / "ImageSets" / "raw_unlabelled.txt").read_text().splitlines()
    assert len(raw) == 2 and raw[0].startswith("2026_01_01/2026_01_01_drive_0001_sync 0000000000 l")
    assert (root / "raw" / "2026_01_01" / "calib_velo_to_cam.txt").is_file()
    kfs = list(generate_keyframes(0, 0, parse_domain("rig-b"), 3, 0.5, with_sweeps=False, cameras=("CAM_FRONT",)))
    n_labelled = 0
    for frame_id, kf in zip(ids, kfs):
        calib = read_calib_file(root / "training" / "calib" / f"{frame_id}.txt")
        K, T = kitti_camera(calib["P2"], calib["R0_rect"], calib["Tr_velo_to_cam"])
        objs = read_label_file(root / "training" / "label_2" / f"{frame_id}.txt")
        frame = read_kitti_object_frame(root, frame_id)
        velo = np.fromfile(root / "training" / "velodyne" / f"{frame_id}.bin", np.float32).reshape(-1, 4)
        assert len(velo) == len(kf.sweep.scan.points) and velo[:, 3].max() <= 1.0
        care = objs.names != "DontCare"
        for box, name, bbox, trunc in zip(frame.boxes.boxes, objs.names[care], objs.bbox[care], objs.truncation[care]):
            corners = box_corners(box[None])[0]
            proj = project_points(corners, K, T, (832, 256), min_depth=0.1)
            uv = proj.uv
            ours = [max(uv[:, 0].min(), 0), max(uv[:, 1].min(), 0), min(uv[:, 0].max(), 831), min(uv[:, 1].max(), 255)]
            # KITTI writes 3D boxes with 2 decimals (ry to 0.01 rad), which moves corners by a pixel or two.
            size = max(bbox[2] - bbox[0], bbox[3] - bbox[1])
            assert np.allclose(ours, bbox, atol=max(2.5, 0.02 * size)), (name, ours, bbox)
            # Points inside the box belong to an object of the box's class.
            inside = points_in_boxes(velo[:, :3], box[None])[:, 0]
            surfaces = kf.sweep.scan.surface[inside]
            instances = kf.sweep.scan.instance[inside]
            kinds = {o.instance_id: o.kind for o in kf.scene.objects}
            classes = {CATEGORIES[kinds[i]].kitti for i in instances if i in kinds}
            assert classes <= {name}, (name, classes, surfaces)
            assert 0 <= trunc <= 1
            n_labelled += 1
    assert n_labelled >= 3


def test_semantickitti_output(tmp_path):
    root = tmp_path / "sk"
    synthesize(SynthOptions(out=str(root), preset="rig-b", format="semantickitti", frames=4, frames_per_scene=2),
               progress=False)
    splits = json.loads((root / "xmkd_splits.json").read_text())
    assert splits == {"train": ["00"], "val": ["08"]}
    seq = root / "sequences" / "00"
    pts = np.fromfile(seq / "velodyne" / "000001.bin", np.float32).reshape(-1, 4)
    labels = np.fromfile(seq / "labels" / "000001.label", np.uint32)
    assert len(labels) == len(pts)
    sem = labels & 0xFFFF
    assert set(np.unique(sem)) <= set(get_label_space("semantickitti19").raw_names)
    assert {40, 48, 50} <= set(np.unique(sem).tolist())  # road, sidewalk, building
    calib = read_calib_file(seq / "calib.txt")
    assert calib["P2"].shape == (3, 4) and calib["Tr"].shape == (3, 4)
    poses = np.loadtxt(seq / "poses.txt").reshape(-1, 3, 4)
    assert len(poses) == 2 and np.allclose(poses[0], np.eye(4)[:3], atol=1e-9)
    assert poses[1][2, 3] > 0.2  # camera 0 moved forward (its z axis) between the scans


def test_same_seed_same_bytes_and_refusal(tmp_path):
    opts = dict(preset="night", format="nuscenes", frames=2, frames_per_scene=1, image_size=(96, 54))
    synthesize(SynthOptions(out=str(tmp_path / "a"), seed=5, **opts), progress=False)
    synthesize(SynthOptions(out=str(tmp_path / "b"), seed=5, workers=2, **opts), progress=False)
    synthesize(SynthOptions(out=str(tmp_path / "c"), seed=6, **opts), progress=False)
    a, b, c = (tree_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert set(a) != set(c) or a != c
    lidar_a = {k: v for k, v in a.items() if "LIDAR_TOP" in k}
    lidar_c = {k: v for k, v in c.items() if "LIDAR_TOP" in k}
    assert sorted(lidar_a.values()) != sorted(lidar_c.values())
    # Writing again with the same options is allowed (same bytes); other options or foreign files are refused.
    synthesize(SynthOptions(out=str(tmp_path / "a"), seed=5, **opts), progress=False)
    assert tree_digest(tmp_path / "a") == a
    with pytest.raises(XmkdError, match="other options"):
        synthesize(SynthOptions(out=str(tmp_path / "a"), seed=7, **opts), progress=False)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.txt").write_text("precious")
    with pytest.raises(XmkdError, match="not empty"):
        synthesize(SynthOptions(out=str(tmp_path / "foreign"), **opts), progress=False)
    assert (tmp_path / "foreign" / "data.txt").read_text() == "precious"
    with pytest.raises(XmkdError, match="unknown preset"):
        synthesize(SynthOptions(out=str(tmp_path / "x"), preset="dusk"), progress=False)


def test_cli_synth_and_viz(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["synth", "--format", "kitti", "--preset", "rig-b", "--frames", "1", "--out", str(out),
                 "--quiet"]) == 0
    assert "wrote 1 kitti frames" in capsys.readouterr().out
    assert main(["viz", "kitti_object", "--root", str(out), "--frame", "000000", "--out", str(tmp_path / "viz")]) == 0
    assert main(["viz", "synthetic", "--preset", "night,rig-b", "--out", str(tmp_path / "viz")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "viz").glob("*.png"))
    assert "000000_bev.png" in pngs and "000000_image_2_points.png" in pngs
    assert any(p.endswith("CAM_FRONT_labels.png") for p in pngs)
    assert main(["synth", "--format", "kitti", "--frames", "1", "--out", str(out), "--seed", "9", "--quiet"]) == 1
    assert "refusing" in capsys.readouterr().err


def test_synthesize_indexed_reuses_a_finished_dataset(tmp_path, monkeypatch):
    opts = dict(preset="night", format="nuscenes", frames=2, frames_per_scene=1, image_size=(96, 54), seed=3)
    root = synthesize_indexed(SynthOptions(out=str(tmp_path / "d"), **opts), "nuscenes", progress=False)
    index = root / "xmkd_index" / "index.json"
    assert index.is_file()
    digest = tree_digest(root)
    rendered = []
    monkeypatch.setattr(synth, "synthesize", lambda *a, **k: rendered.append(a))
    synthesize_indexed(SynthOptions(out=str(root), workers=2, **opts), "nuscenes", progress=False)
    assert rendered == [] and tree_digest(root) == digest  # finished with the same options: nothing rewritten
    synthesize_indexed(SynthOptions(out=str(root), **{**opts, "seed": 4}), "nuscenes", progress=False)
    assert len(rendered) == 1  # other options go to synthesize(), which refuses them (tested above)
    monkeypatch.undo()
    index.unlink()  # an interrupted run: the index is written last, so the data is rendered and indexed again
    synthesize_indexed(SynthOptions(out=str(root), **opts), "nuscenes", progress=False)
    assert index.is_file() and tree_digest(root) == digest
