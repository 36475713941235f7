"""Readers, `prepare` and `inspect`: round trips on the synthetic writers' output, real frames, tiny fixtures
written from the formats' specs (Waymo v2, A2D2, VirtualKITTI), and bad input."""

import json
import shutil

import layouts
import numpy as np
import pytest
from PIL import Image

from xmkd.cli import main
from xmkd.data.index import IndexedFrames, inspect, load_index, prepare
from xmkd.data.labels import get_label_space
from xmkd.data.readers import make_reader
from xmkd.data.synthetic.generate import generate_keyframes, keyframe_to_frame
from xmkd.data.synthetic.synth import SynthOptions, synthesize
from xmkd.data.synthetic.world import parse_domain
from xmkd.data.synthetic.writers.kitti import kitti_calib
from xmkd.data.synthetic.writers.semantickitti import point_labels
from xmkd.errors import XmkdDataError
from xmkd.geometry.camera import project_points
from xmkd.geometry.transforms import invert_transform


@pytest.fixture(scope="module")
def synth_nuscenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("nus") / "ds"
    synthesize(SynthOptions(out=str(root), frames=4, frames_per_scene=2, image_size=(160, 90), val_fraction=0.5),
               progress=False)
    return root


@pytest.fixture(scope="module")
def synth_kitti(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti") / "ds"
    synthesize(SynthOptions(out=str(root), preset="rig-b", format="kitti", frames=3, frames_per_scene=3,
                            unlabelled=2), progress=False)
    return root


@pytest.fixture(scope="module")
def synth_semkitti(tmp_path_factory):
    root = tmp_path_factory.mktemp("sk") / "ds"
    synthesize(SynthOptions(out=str(root), preset="rig-b", format="semantickitti", frames=4, frames_per_scene=2),
               progress=False)
    return root


def test_nuscenes_round_trip(synth_nuscenes, tmp_path):
    pytest.importorskip("nuscenes")
    report = prepare("nuscenes", synth_nuscenes, tmp_path / "index", progress=False)
    assert report.frames == 4 and not report.bad
    assert report.splits["mini_val"] == 2 and report.splits["mini_train"] == 2 and report.splits["val_usa"] >= 2
    frames = IndexedFrames(tmp_path / "index", "mini_train")
    truth = list(generate_keyframes(0, 0, parse_domain("day"), 2, image_size=(160, 90)))
    space = get_label_space("nuscenes16")
    for frame, kf in zip(frames, truth):
        want = keyframe_to_frame(kf, space)
        assert np.array_equal(frame.points, want.points)
        assert np.array_equal(frame.labels, want.labels)
        assert set(frame.cameras) == set(want.cameras) and len(frame.cameras) == 6
        for name, cam in frame.cameras.items():
            assert np.allclose(cam.K, want.cameras[name].K)
            assert np.allclose(cam.T_cam_lidar, want.cameras[name].T_cam_lidar, atol=1e-6)
            a = project_points(frame.points, cam.K, cam.T_cam_lidar, cam.image_size)
            b = project_points(want.points, want.cameras[name].K, want.cameras[name].T_cam_lidar, cam.image_size)
            assert np.array_equal(a.visible, b.visible)
            assert np.array_equal(cam.image.shape, want.cameras[name].image.shape)
        # Boxes near the ego were written; each matches the generator's box in the LiDAR frame.
        truth_boxes = {i: b for i, b in zip(want.boxes.instance_ids, want.boxes.boxes)}
        assert len(frame.boxes) > 5
        for box in frame.boxes.boxes:
            best = min(truth_boxes.values(), key=lambda t: np.linalg.norm(t[:3] - box[:3]))
            assert np.allclose(best[:6], box[:6], atol=1e-4)
            assert np.isclose(np.cos(best[6] - box[6]), 1.0, atol=1e-6)
        assert np.allclose(frame.ego_pose, kf.sweep.T_world_ego @ kf.T_ego_lidar, atol=1e-6)


def test_nuscenes_sweeps_are_motion_compensated(synth_nuscenes, tmp_path):
    pytest.importorskip("nuscenes")
    prepare("nuscenes", synth_nuscenes, tmp_path / "index", progress=False)
    frames = IndexedFrames(tmp_path / "index", "mini_train", sweeps=4)
    frame = frames[0]  # the scene's first keyframe: sweeps before it, and the next keyframe's sweeps after it
    kfs = list(generate_keyframes(0, 0, parse_domain("day"), 1, image_size=(160, 90)))
    n_key = frame.meta["num_keyframe_points"]
    assert frame.point_fields[-1] == "time_lag" and len(frame.points) > n_key
    lags = np.unique(frame.points[n_key:, -1])
    assert np.allclose(lags, [0.05, 0.1], atol=1e-3)  # 2 past + 2 future at 20 Hz
    assert np.all(frame.labels[n_key:] == 255) and np.all(frame.points[:n_key, -1] == 0)
    # A past sweep's points land where the generator put them, moved into the keyframe's LiDAR frame.
    sweep = kfs[0].sweeps_before[-1]  # the nearest past sweep comes first
    T_key = kfs[0].sweep.T_world_ego @ kfs[0].T_ego_lidar
    T_sweep = sweep.T_world_ego @ kfs[0].T_ego_lidar
    expected = sweep.scan.points[:, :3] @ (invert_transform(T_key) @ T_sweep)[:3, :3].T + (
        invert_transform(T_key) @ T_sweep)[:3, 3]
    got = frame.points[n_key:n_key + len(expected), :3]
    assert np.allclose(got, expected, atol=1e-3)


def test_semantickitti_round_trip_and_aggregation(synth_semkitti):
    reader = make_reader("semantickitti", synth_semkitti)
    records = [reader.check(r) for r in reader.scan(["train"])]
    assert [r["id"] for r in records] == ["00/000000", "00/000001"]
    kfs = list(generate_keyframes(0, 0, parse_domain("rig-b"), 2, 0.1, with_sweeps=False, cameras=("CAM_FRONT",)))
    space = get_label_space("semantickitti19")
    for rec, kf in zip(records, kfs):
        frame = reader.load(rec)
        calib = kitti_calib(kf)
        assert np.allclose(frame.points[:, :3], kf.sweep.scan.points[:, :3] @ calib.T_velo_lidar[:3, :3].T, atol=1e-4)
        assert np.array_equal(frame.labels, space.from_raw(point_labels(kf) & 0xFFFF))
        cam = frame.cameras["image_2"]
        T_true = kf.T_cam_lidar("CAM_FRONT") @ invert_transform(calib.T_velo_lidar)
        assert np.allclose(cam.T_cam_lidar, T_true, atol=1e-6) and np.allclose(cam.K, kf.K["CAM_FRONT"])
    # Multi-scan aggregation: scan 0 moved into scan 1's frame by the poses, as the generator saw it.
    agg = make_reader("semantickitti", synth_semkitti, sweeps=1).load(records[1])
    n = agg.meta["num_keyframe_points"]
    T = invert_transform(records_pose(records[1])) @ records_pose(records[0])
    prev = make_reader("semantickitti", synth_semkitti).load(records[0]).points[:, :3]
    assert np.allclose(agg.points[n:, :3], prev @ T[:3, :3].T + T[:3, 3], atol=1e-3)
    truth = invert_transform(kfs[1].sweep.T_world_ego) @ kfs[0].sweep.T_world_ego  # ego motion between scans
    assert np.allclose(T[:3, 3], kitti_calib(kfs[0]).T_velo_lidar[:3, :3] @ (invert_transform(kfs[1].T_ego_lidar)
                       @ truth @ kfs[0].T_ego_lidar)[:3, 3], atol=1e-5)
    assert np.allclose(agg.points[n:, -1], 0.1, atol=1e-6)


def records_pose(rec):
    return np.asarray(rec["ego_pose"])


def test_kitti_object_and_raw_round_trip(synth_kitti):
    reader = make_reader("kitti_object", synth_kitti)
    recs = [reader.check(r) for r in reader.scan()]
    assert [r["id"] for r in recs] == ["000000", "000001", "000002"]
    kfs = list(generate_keyframes(0, 0, parse_domain("rig-b"), 3, 0.5, with_sweeps=False, cameras=("CAM_FRONT",)))
    for rec, kf in zip(recs, kfs):
        frame = reader.load(rec)
        calib = kitti_calib(kf)
        truth = kf.boxes_lidar()
        truth_xyz = truth[:, :3] @ calib.T_velo_lidar[:3, :3].T
        for box in frame.boxes.boxes:
            i = np.argmin(np.linalg.norm(truth_xyz - box[:3], axis=1))
            assert np.allclose(truth_xyz[i], box[:3], atol=0.02)  # labels have 2 decimals
            assert np.allclose(truth[i, 3:6], box[3:6], atol=0.006)
    raw = make_reader("kitti_raw", synth_kitti)
    raw_recs = [raw.check(r) for r in raw.scan()]
    assert len(raw_recs) == 2 and raw_recs[0]["splits"] == ["raw_unlabelled"]
    frame = raw.load(raw_recs[0])
    obj = reader.load(recs[0]).cameras["image_2"]
    assert np.allclose(frame.cameras["image_2"].K, obj.K) and np.allclose(frame.cameras["image_2"].T_cam_lidar,
                                                                          obj.T_cam_lidar, atol=1e-6)
    assert frame.boxes is None and frame.labels is None


def test_real_kitti_frame(realdata):
    summary = inspect("kitti_object", realdata / "kitti-object")
    assert summary["boxes_per_class"] == {"Car": 6, "DontCare": 4}
    reader = make_reader("kitti_object", realdata / "kitti-object")
    frame = reader.load(reader.check(next(reader.scan())))
    cam = frame.cameras["image_2"]
    assert project_points(frame.points, cam.K, cam.T_cam_lidar, cam.image_size, min_depth=0).visible.all()
    assert len(frame.boxes) == 6 and frame.meta["dontcare_bbox"].shape == (4, 4)


def _real_nuscenes_tables(src, root):
    """The real nuScenes keyframe wrapped in the 13 tables (its own calibration), so the reader reads it."""
    from xmkd.data.labels import NUSCENES_FINE
    from xmkd.data.synthetic.writers.common import token
    from xmkd.geometry.transforms import matrix_to_quat

    meta = json.loads((src / "frame.json").read_text())
    shutil.copytree(src / "samples", root / "samples")
    lidar2ego, ego2global = np.array(meta["lidar2ego"]), np.array(meta["ego2global"])
    t = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
                         "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")}

    def pose(T):
        return {"translation": T[:3, 3].tolist(), "rotation": matrix_to_quat(T[:3, :3]).tolist()}

    t["category"] = [{"token": token("c", n), "name": n, "description": "", "index": i}
                     for i, (n, _) in enumerate(NUSCENES_FINE)]
    t["log"] = [{"token": "log", "logfile": "n015", "vehicle": "n015", "date_captured": "2018-07-24",
                 "location": "singapore-onenorth"}]
    t["map"] = [{"token": "map", "log_tokens": ["log"], "category": "semantic_prior", "filename": "maps/m.png"}]
    (root / "maps").mkdir()
    Image.new("L", (1, 1)).save(root / "maps" / "m.png")
    t["scene"] = [{"token": "scene", "name": "scene-0061", "description": "Real frame", "log_token": "log",
                   "nbr_samples": 1, "first_sample_token": "sample", "last_sample_token": "sample"}]
    t["sample"] = [{"token": "sample", "timestamp": 0, "scene_token": "scene", "prev": "", "next": ""}]
    channels = {"LIDAR_TOP": (lidar2ego, ego2global, meta["lidar_file"], [], 0, 0)}
    for name, cam in meta["cameras"].items():
        cam2ego = np.array(cam["cam2ego"])
        # the camera's own ego pose, recovered from lidar2cam = inv(cam2ego) inv(ego2global_cam) ego2global lidar2ego
        ego2global_cam = ego2global @ lidar2ego @ np.linalg.inv(np.array(cam["lidar2cam"])) @ np.linalg.inv(cam2ego)
        channels[name] = (cam2ego, ego2global_cam, cam["image_file"], cam["cam2img"], cam["width"], cam["height"])
    for ch, (s2e, e2g, f, K, w, h) in channels.items():
        t["sensor"].append({"token": f"sensor-{ch}", "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP" else
                            "camera"})
        t["calibrated_sensor"].append({"token": f"cs-{ch}", "sensor_token": f"sensor-{ch}", "camera_intrinsic": K,
                                       **pose(s2e)})
        t["ego_pose"].append({"token": f"ep-{ch}", "timestamp": 0, **pose(e2g)})
        t["sample_data"].append({"token": f"sd-{ch}", "sample_token": "sample", "ego_pose_token": f"ep-{ch}",
                                 "calibrated_sensor_token": f"cs-{ch}", "filename": f, "fileformat": "",
                                 "is_key_frame": True, "width": w, "height": h, "timestamp": 0, "prev": "",
                                 "next": ""})
    (root / "v1.0-mini").mkdir()
    for name, rows in t.items():
        (root / "v1.0-mini" / f"{name}.json").write_text(json.dumps(rows))
    return meta


def test_real_nuscenes_frame(realdata, tmp_path):
    pytest.importorskip("nuscenes")
    meta = _real_nuscenes_tables(realdata / "nuscenes-frame", tmp_path / "nus")
    report = prepare("nuscenes", tmp_path / "nus", tmp_path / "index", progress=False)
    assert report.frames == 1 and not report.bad
    frame = IndexedFrames(tmp_path / "index", "mini_train")[0]
    assert len(frame.cameras) == 6 and frame.num_points == 34688
    for name, cam in frame.cameras.items():
        assert np.allclose(cam.T_cam_lidar, meta["cameras"][name]["lidar2cam"], atol=1e-5)
        assert cam.image_size == (1600, 900)
    front = frame.cameras["CAM_FRONT"]
    visible = project_points(frame.points, front.K, front.T_cam_lidar, front.image_size).visible.sum()
    assert 2500 < visible < 3500


# -- tiny fixtures written from the specs -------------------------------------------------------------------------


def test_waymo_v2_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    from xmkd.data.readers.waymo import range_image_to_points

    fx = layouts.waymo(tmp_path / "waymo")
    h, w = fx["shape"]
    report = prepare("waymo", tmp_path / "waymo", tmp_path / "index", progress=False)
    assert report.frames == 2 and report.splits == {"training": 2, "training_labelled": 2} and not report.bad
    frames = IndexedFrames(tmp_path / "index", "training")
    frame = frames[0]
    # The known point set, from the range-image formulas written out independently.
    incl = (-0.3 + (np.arange(h) + 0.5) / h * 0.35)[::-1]
    az = ((np.arange(w, 0, -1) - 0.5) / w * 2 - 1) * np.pi - 0.3
    r = fx["ranges"][0]
    pts = np.stack([np.cos(az)[None] * np.cos(incl)[:, None] * r, np.sin(az)[None] * np.cos(incl)[:, None] * r,
                    np.sin(incl)[:, None] * r], -1).reshape(-1, 3)
    keep = r.reshape(-1) > 0
    ext = fx["extrinsic"]
    expected = pts[keep] @ ext[:3, :3].T + ext[:3, 3]
    assert frame.num_points == keep.sum() == h * w - 3
    assert np.allclose(frame.points[:, :3], expected, atol=1e-4)
    assert np.allclose(range_image_to_points(fx["range_images"][0], ext, incl[::-1])[0][:, :3], expected, atol=1e-4)
    assert np.array_equal(frame.labels, get_label_space("waymo22").from_raw(fx["semantic"][0].reshape(-1)[keep]))
    assert np.array_equal(frame.instance_ids, fx["instance"][0].reshape(-1)[keep])
    cam = frame.cameras["FRONT"]
    # A point 10 m ahead of the camera projects to the principal point.
    p = project_points(np.array([[11.5, 0.0, 2.0]]), cam.K, cam.T_cam_lidar, (32, 24))
    assert np.allclose(p.uv, [[16, 12]]) and np.isclose(p.depth[0], 10.0)
    assert frames[1].cameras == {}  # no image for the second timestamp


def test_virtual_kitti_npy(tmp_path):
    pts = layouts.virtual_kitti(tmp_path / "vk", frames=1)["frames"][0]
    reader = make_reader("virtualkitti", tmp_path / "vk")
    frame = reader.load(reader.check(next(reader.scan())))
    assert frame.point_fields == ("x", "y", "z", "r", "g", "b")
    assert np.array_equal(frame.labels, get_label_space("virtualkitti6").from_raw(pts[:, 6].astype(int)))
    cam = frame.cameras["image_2"]
    # xMUDA: cam = (-Y, -Z, X); uv = K cam / z
    cam_xyz = np.column_stack([-pts[:, 1], -pts[:, 2], pts[:, 0]])
    uv = (cam_xyz @ np.array([[725, 0, 620.5], [0, 725, 187], [0, 0, 1]]).T)
    p = project_points(frame.points, cam.K, cam.T_cam_lidar, cam.image_size)
    assert np.allclose(p.uv, uv[:, :2] / uv[:, 2:], atol=1e-3)


def test_a2d2_npz_with_undistortion(tmp_path):
    from xmkd.data.readers.a2d2 import undistort_source

    cv2 = pytest.importorskip("cv2")
    K = np.array([[1687.0, 0, 965.0], [0, 1783.0, 684.0], [0, 0, 1]])
    K_orig = np.array([[1689.0, 0, 960.0], [0, 1786.0, 680.0], [0, 0, 1]])
    dist = np.array([-0.16, 0.12, 0.001, -0.002, 0.02])
    # The undistortion map agrees with OpenCV's.
    mx, my = cv2.initUndistortRectifyMap(K_orig, dist, None, K, (1920, 1208), cv2.CV_32FC1)
    vv, uu = np.mgrid[0:1208:97, 0:1920:131]
    su, sv = undistort_source(uu.astype(float), vv.astype(float), K, K_orig, dist, "Telecam")
    assert np.allclose(su, mx[vv, uu], atol=0.05) and np.allclose(sv, my[vv, uu], atol=0.05)
    fd = np.array([0.02, -0.01, 0.003, -0.001])
    fx, fy = cv2.fisheye.initUndistortRectifyMap(K_orig, fd, np.eye(3), K, (1920, 1208), cv2.CV_32FC1)
    su, sv = undistort_source(uu.astype(float), vv.astype(float), K, K_orig, fd, "Fisheye")
    assert np.allclose(su, fx[vv, uu], atol=0.05) and np.allclose(sv, fy[vv, uu], atol=0.05)

    fx = layouts.a2d2(tmp_path / "a2d2", frames=1, image_size=(1920, 1208), K=K)
    col, row = fx["frames"][0]["col"], fx["frames"][0]["row"]
    reader = make_reader("a2d2", tmp_path / "a2d2")
    rec = reader.check(next(reader.scan()))
    frame = reader.load(rec)
    space = get_label_space("a2d2_10")
    expected = np.where(col.astype(int) < 960, space.class_names.index("car"), space.class_names.index("road"))
    assert np.array_equal(frame.labels, expected)
    view = frame.cameras["cam_front_center"]
    assert np.allclose(view.T_cam_lidar, fx["T"], atol=1e-6)  # fitted from the point -> pixel pairs
    p = project_points(frame.points, view.K, view.T_cam_lidar, view.image_size)
    assert np.allclose(p.uv, np.column_stack([col, row]), atol=1e-3)
    assert rec["splits"] == ["train"]


# -- bad input ----------------------------------------------------------------------------------------------------


def _copy_kitti(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("xmkd_index", "raw"))
    return dst


def test_bad_files_are_reported_and_do_not_lose_the_others(synth_kitti, tmp_path):
    root = _copy_kitti(synth_kitti, tmp_path / "k")
    velo = root / "training" / "velodyne" / "000000.bin"
    velo.write_bytes(velo.read_bytes()[:-6])  # truncated
    calib = root / "training" / "calib" / "000001.txt"
    calib.write_text("\n".join(line for line in calib.read_text().splitlines() if not line.startswith("P2")))
    (root / "training" / "image_2" / "000002.png").unlink()
    report = prepare("kitti_object", root, root / "xmkd_index", progress=False)
    reasons = {b["frame"]: b["reason"] for b in report.bad}
    assert set(reasons) == {"000000", "000001", "000002"}
    assert "000000.bin" in reasons["000000"] and "truncated" in reasons["000000"]
    assert "000001.txt" in reasons["000001"] and "P2" in reasons["000001"]
    assert "000002.png" in reasons["000002"] and "missing" in reasons["000002"]
    assert load_index(root / "xmkd_index")["bad"] == report.bad
    (root / "training" / "image_2" / "000002.png").write_bytes(b"not a png")
    with pytest.raises(XmkdDataError, match="000002.png: unreadable image"):
        make_reader("kitti_object", root).check(next(r for r in make_reader("kitti_object", root).scan()
                                                     if r["id"] == "000002"))
    # The CLI lists them and exits non-zero.
    assert main(["prepare", "kitti_object", "--root", str(root), "--out", str(root / "idx2"), "--quiet"]) == 1


def test_label_problems(synth_semkitti, tmp_path):
    root = tmp_path / "sk"
    shutil.copytree(synth_semkitti, root)
    labels = root / "sequences" / "00" / "labels" / "000000.label"
    labels.write_bytes(labels.read_bytes()[:-8])  # two labels short
    other = root / "sequences" / "00" / "labels" / "000001.label"
    raw = np.fromfile(other, np.uint32)
    raw[5] = 300  # not a SemanticKITTI id
    raw.tofile(other)
    report = prepare("semantickitti", root, root / "xmkd_index", progress=False)
    reasons = {b["frame"]: b["reason"] for b in report.bad}
    assert "000000.label" in reasons["00/000000"] and "labels for" in reasons["00/000000"]
    assert "000001.label" in reasons["00/000001"] and "unknown SemanticKITTI label id(s) [300]" in reasons["00/000001"]
    assert report.frames == 2  # the validation sequence is intact


def test_prepare_resumes_after_an_interruption(synth_kitti, tmp_path, monkeypatch):
    from xmkd.data.readers.kitti_object import KittiObjectReader

    root = _copy_kitti(synth_kitti, tmp_path / "k")
    original = KittiObjectReader.check
    calls = []

    def flaky(self, record):
        calls.append(record["id"])
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while checking the third frame
        return original(self, record)

    monkeypatch.setattr(KittiObjectReader, "check", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare("kitti_object", root, root / "xmkd_index", progress=False)
    assert not (root / "xmkd_index" / "index.json").exists()
    monkeypatch.setattr(KittiObjectReader, "check", original)
    report = prepare("kitti_object", root, root / "xmkd_index", progress=False)
    assert report.resumed == 2 and report.frames == 3
    assert not (root / "xmkd_index" / "index.partial.jsonl").exists()


def test_prepare_resumes_from_a_torn_or_corrupt_log(synth_kitti, tmp_path, monkeypatch):
    # issue 19's tester: a truncated first line, or a header-only log (Ctrl-C during the first frame, after which
    # the header was written twice), gave a traceback on every later `prepare`
    from xmkd.data.index import _resume
    from xmkd.data.readers.kitti_object import KittiObjectReader

    root = _copy_kitti(synth_kitti, tmp_path / "k")
    out = root / "xmkd_index"
    original = KittiObjectReader.check

    def interrupted_after(n):
        calls = []

        def flaky(self, record):
            calls.append(record["id"])
            if len(calls) > n:
                raise KeyboardInterrupt
            return original(self, record)

        monkeypatch.setattr(KittiObjectReader, "check", flaky)
        with pytest.raises(KeyboardInterrupt):
            prepare("kitti_object", root, out, progress=False)
        monkeypatch.setattr(KittiObjectReader, "check", original)
        return (out / "index.partial.jsonl").read_bytes().split(b"\n")[:-1]

    log = out / "index.partial.jsonl"
    lines = interrupted_after(2)
    assert len(lines) == 3
    for text, resumed in [(lines[0][:10], 0),  # torn header: start over
                          (lines[0] + b"\n", 0),  # header only
                          (b"\n".join([lines[0], b"not json", lines[2]]) + b"\n", 1),  # an unreadable line
                          (b"\n".join(lines) + b'\n{"id": "0000', 2)]:  # torn last line
        log.write_bytes(text)
        assert prepare("kitti_object", root, out, progress=False).resumed == resumed
        assert not log.exists() and len(load_index(out)["frames"]) == 3
    assert interrupted_after(0) == lines[:1]  # Ctrl-C in the first frame leaves the header alone
    assert interrupted_after(0) == lines[:1]  # and resuming that does not write it twice
    assert prepare("kitti_object", root, out, progress=False).resumed == 0
    log.write_bytes(b"\n".join(lines) + b'\n{"id": "0000')
    header = json.loads(lines[0])
    assert set(_resume(log, header)) == {json.loads(x)["id"] for x in lines[1:]}
    assert log.read_bytes() == b"\n".join(lines) + b"\n"  # the torn line is cut, so new entries start on a new line


def test_inspect_json_and_cli(synth_kitti, capsys):
    assert main(["inspect", "kitti_object", "--root", str(synth_kitti), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("frames", "splits", "points_per_frame", "cameras", "label_histogram", "boxes_per_class"):
        assert key in info
    assert info["frames"] == 3 and info["cameras"] == {"image_2": {"832x256": 3}}
    assert set(info["points_per_frame"]) == {"min", "mean", "max"}
    assert main(["inspect", "kitti_object", "--root", str(synth_kitti), "--frame", "000001"]) == 0
    assert "points:" in capsys.readouterr().out
    # an unknown label space is a one-line error naming the known ones, not a traceback
    assert main(["inspect", "kitti_object", "--root", str(synth_kitti), "--label-space", "nuscenes17"]) == 1
    err = capsys.readouterr().err
    assert "unknown label space 'nuscenes17'; known: a2d2_10" in err and "Traceback" not in err
