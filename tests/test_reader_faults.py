"""The faults users report, for every reader and every file type they apply to, on tiny datasets the tests write
(tests/layouts.py): several image sizes per camera, NaN / Inf in point files, short per-scan tables, LiDAR-only
datasets (`--cameras none`), and what `inspect`, `prepare` and `viz` say about bad, missing and Git LFS files."""

import json
import shutil

import layouts
import numpy as np
import pytest
from layouts import CAMERA_FILES, CAMERA_OF, FILES, LFS_POINTER, first
from PIL import Image

from xmkd.cli import main
from xmkd.data.index import IndexedFrames, inspect, load_index, prepare
from xmkd.data.readers import make_reader
from xmkd.errors import XmkdDataError, XmkdError

DATASETS = list(FILES)


class Layouts:
    """One pristine copy of each dataset per module, built when first asked for; tests change copies of it."""

    def __init__(self, base):
        self.base, self.roots = base, {}

    def path(self, dataset):
        pytest.importorskip({"nuscenes": "nuscenes", "waymo": "pyarrow"}.get(dataset, "numpy"))
        if dataset not in self.roots:
            self.roots[dataset] = layouts.build(dataset, self.base / dataset)
        return self.roots[dataset]

    def copy(self, dataset, tmp_path):
        return shutil.copytree(self.path(dataset), tmp_path / dataset)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return Layouts(tmp_path_factory.mktemp("layouts"))


def reasons_of(dataset, root, out, cameras=None):
    """prepare's reasons for the bad frames, or the error when the whole dataset cannot be read."""
    try:
        return [b["reason"] for b in prepare(dataset, root, out, progress=False, cameras=cameras).bad]
    except XmkdError as err:
        return [str(err)]


# -- 3: every image size of a camera, with its count ---------------------------------------------------------------


@pytest.mark.parametrize("dataset", DATASETS)
def test_inspect_reports_every_image_size_per_camera(dataset, layout, tmp_path):
    if dataset == "waymo":
        pytest.importorskip("pyarrow")
        root = layouts.waymo(tmp_path / "waymo", image_sizes=((32, 24), (40, 30)))["root"]
        expected = {"FRONT": {"32x24": 1, "40x30": 1}}  # one image per segment, at its first frame
    else:
        root = layout.copy(dataset, tmp_path)
        path = first(root, FILES[dataset]["image"])
        w, h = Image.open(path).size
        layouts.write_image(path, (w + 8, h + 4))
        frames = len(make_reader(dataset, root).records())
        expected = {CAMERA_OF[dataset]: {f"{w}x{h}": frames - 1, f"{w + 8}x{h + 4}": 1}}
    info = inspect(dataset, root)
    assert info["cameras"] == expected and info["bad"] == []


# -- 4: NaN / Inf in a point file -----------------------------------------------------------------------------------


def poison(path, dataset):
    """Put a NaN in point row 3 and an Inf in row 5 of the file's points (its first float columns)."""
    if path.suffix == ".npz":
        data = dict(np.load(path))
        data["points"][3, 1], data["points"][5, 0] = np.nan, np.inf
        np.savez(path, **data)
    elif path.suffix == ".npy":
        arr = np.load(path)
        arr[3, 1], arr[5, 0] = np.nan, np.inf
        np.save(path, arr)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        values = rows[0]["[LiDARComponent].range_image_return1.values"]
        values[4 * 12 + 1], values[4 * 20] = float("nan"), float("inf")  # intensity of pixel 12, range of pixel 20
        pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    else:
        arr = np.fromfile(path, np.float32)
        columns = 5 if dataset == "nuscenes" else 4
        arr[3 * columns + 1], arr[5 * columns] = np.nan, np.inf
        arr.tofile(path)


@pytest.mark.parametrize("dataset,kind", [(d, "points") for d in DATASETS] + [("nuscenes", "sweep")])
def test_prepare_catches_nan_and_inf_in_every_point_file(dataset, kind, layout, tmp_path):
    root = layout.copy(dataset, tmp_path)
    path = first(root, FILES[dataset][kind])
    poison(path, dataset)
    report = prepare(dataset, root, tmp_path / "index", progress=False)
    assert report.bad, "a point file with NaN and Inf passed prepare"
    unit = "pixel(s)" if dataset == "waymo" else "row(s)"  # Waymo: a range image, named by pixel and channel
    for bad in report.bad:
        assert bad["file"] == str(path) and f"2 {unit} hold NaN or Inf" in bad["reason"], bad
        assert "expected finite numbers" in bad["reason"]
        if dataset == "waymo":
            assert "(first: pixel (row 1, col 4), intensity = nan)" in bad["reason"]
    assert report.frames == len(make_reader(dataset, root).records()) - len(report.bad)  # the others are indexed


# -- 5: per-scan tables shorter than the scans ----------------------------------------------------------------------


def test_short_or_malformed_semantickitti_tables(layout, tmp_path):
    root = layout.copy("semantickitti", tmp_path)
    assert not prepare("semantickitti", root, tmp_path / "before", progress=False).bad
    seq = root / "sequences" / "00"
    times = (seq / "times.txt").read_text().splitlines()
    (seq / "times.txt").write_text(times[0] + "\n")
    report = prepare("semantickitti", root, tmp_path / "short", progress=False)
    assert [(b["frame"], b["file"]) for b in report.bad] == [("00/000001", str(seq / "times.txt"))]
    assert "no line for scan 1: 1 line(s); expected one line per scan" in report.bad[0]["reason"]
    # An index prepared before times.txt was cut: a frame beyond its end names the file instead of an IndexError;
    # a frame within it merges only the scans that still have a time (none here).
    before = IndexedFrames(tmp_path / "before", "train", sweeps=1)
    with pytest.raises(XmkdDataError, match=r"times\.txt: no line for scan 1"):
        before[1]
    assert before[0].num_points == before[0].meta["num_keyframe_points"]
    assert IndexedFrames(tmp_path / "before", "train", sweeps=0)[1].num_points > 0  # without sweeps it is not read
    (seq / "times.txt").write_text("0.0\nabc\n")
    reasons = reasons_of("semantickitti", root, tmp_path / "bad")
    assert reasons and all("times.txt: line 2: expected 1 numbers, got 'abc'" in r for r in reasons)
    (seq / "times.txt").write_text("\n".join(times) + "\n")
    poses = (seq / "poses.txt").read_text().splitlines()
    (seq / "poses.txt").write_text(poses[0] + "\n" + " ".join(poses[1].split()[:11]) + "\n")
    reasons = reasons_of("semantickitti", root, tmp_path / "bad2")
    assert reasons and all("poses.txt: line 2: 11 values, expected 12" in r for r in reasons)


def test_short_times_and_short_poses_leave_the_same_trainable_frames(layout, tmp_path):
    # Four scans, then either table cut to two lines: prepare lists scans 2 and 3 (naming the short table) and
    # indexes 0 and 1, which load with sweeps merged from the scans that have both a pose and a time.
    root = layout.copy("semantickitti", tmp_path)
    seq = root / "sequences" / "00"
    for sub, ext in (("velodyne", "bin"), ("labels", "label"), ("image_2", "png")):
        for scan in (2, 3):
            shutil.copy(seq / sub / f"000001.{ext}", seq / sub / f"00000{scan}.{ext}")
    poses = (seq / "poses.txt").read_text().splitlines()
    full = {"times.txt": "0.0\n0.1\n0.2\n0.3\n", "poses.txt": "\n".join(poses + poses[1:] * 2) + "\n"}
    merged = {}
    for short in ("times.txt", "poses.txt"):
        for name, text in full.items():
            (seq / name).write_text("".join(text.splitlines(True)[:2]) if name == short else text)
        report = prepare("semantickitti", root, tmp_path / short, progress=False)
        assert [(b["frame"], b["file"]) for b in report.bad] == [(f"00/00000{i}", str(seq / short)) for i in (2, 3)]
        assert all(f"no line for scan {i}: 2 line(s)" in b["reason"] for i, b in zip((2, 3), report.bad))
        frames = IndexedFrames(tmp_path / short, "train", sweeps=2)
        merged[short] = [(f.num_points, f.meta["num_keyframe_points"]) for f in (frames[0], frames[1])]
    assert merged["times.txt"] == merged["poses.txt"]
    (n0, k0), (n1, k1) = merged["times.txt"]
    assert n0 == k0 + k1 and n1 == k1 + k0  # each merges the other scan only: 2 and 3 are outside the tables


def waymo_without_a_second_row(tmp_path, kind):
    """A Waymo layout whose `kind` component (FILES["waymo"]) keeps only the first frame's row."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    root = layouts.waymo(tmp_path / "waymo")["root"]
    path = first(root, FILES["waymo"][kind])
    pq.write_table(pa.Table.from_pylist(pq.read_table(path).to_pylist()[:1], schema=pq.read_schema(path)), path)
    return root, path


def test_waymo_vehicle_pose_without_a_row_for_a_frame(tmp_path):
    root, path = waymo_without_a_second_row(tmp_path, "poses")
    report = prepare("waymo", root, tmp_path / "index", progress=False)
    assert [(b["file"], b["reason"].split(": ")[-1]) for b in report.bad] == [(str(path), "no row for timestamp "
                                                                               "1100000")]


# -- 6: LiDAR only --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", DATASETS)
def test_lidar_only_needs_no_image_or_camera_calibration(dataset, layout, tmp_path, capsys):
    root = layout.copy(dataset, tmp_path)
    for pattern in CAMERA_FILES[dataset]:
        for path in root.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if dataset != "waymo":  # Waymo's camera components are optional anyway
        assert reasons_of(dataset, root, tmp_path / "with_cameras"), "the camera files were not needed at all"
    index = tmp_path / "index"
    assert main(["prepare", dataset, "--root", str(root), "--out", str(index), "--cameras", "none", "--quiet"]) == 0
    idx = load_index(index)
    assert idx["cameras"] == [] and not idx["bad"] and idx["frames"]
    assert all(r["cameras"] == {} and r["stats"]["cameras"] == {} for r in idx["frames"])
    split = next(iter(idx["split_ids"]))
    frame = IndexedFrames(index, split)[0]  # every camera asked for: the index has none
    assert frame.cameras == {} and frame.num_points > 0
    with pytest.raises(XmkdError, match=rf"cameras \['{CAMERA_OF[dataset]}'\] were not prepared: the index was "
                                        "prepared with --cameras none"):
        IndexedFrames(index, split, cameras=[CAMERA_OF[dataset]])
    capsys.readouterr()
    assert main(["inspect", dataset, "--root", str(root), "--cameras", "none", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bad"] == [] and info["cameras"] == {} and info["frames"] == len(idx["frames"])
    frame_id = idx["frames"][0]["id"]
    assert main(["inspect", dataset, "--root", str(root), "--cameras", "none", "--json", "--frame", frame_id]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["id"] == frame_id and one["cameras"] == {} and one["points"] == idx["frames"][0]["stats"]["points"]
    assert main(["viz", dataset, "--root", str(root), "--cameras", "none", "--out", str(tmp_path / "viz")]) == 0
    assert [p.name.endswith("_bev.png") for p in (tmp_path / "viz").iterdir()] == [True]


def test_cameras_option_names_and_unknown_names(layout, tmp_path, capsys):
    root = layout.path("kitti_object")
    assert main(["prepare", "kitti_object", "--root", str(root), "--out", str(tmp_path / "i"), "--cameras",
                 "CAM_FRONT"]) == 1
    assert "kitti_object has no camera 'CAM_FRONT'; its cameras: image_2 (or none)" in capsys.readouterr().err
    assert main(["prepare", "kitti_object", "--root", str(root), "--out", str(tmp_path / "i"), "--cameras",
                 "image_2", "--quiet"]) == 0
    assert load_index(tmp_path / "i")["cameras"] == ["image_2"]
    assert set(load_index(tmp_path / "i")["frames"][0]["cameras"]) == {"image_2"}
    with pytest.raises(SystemExit):
        main(["inspect", "kitti_object", "--root", str(root), "--cameras", "image_2,"])
    assert "expected comma-separated camera names or 'none'" in capsys.readouterr().err


def test_viz_synthetic_without_cameras(tmp_path, capsys):
    assert main(["viz", "synthetic", "--preset", "rig-b", "--cameras", "none", "--out", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic_day_city-a_rig-b_s0_bev.png"]
    assert main(["viz", "synthetic", "--preset", "rig-b", "--cameras", "CAM_BACK", "--out", str(tmp_path)]) == 1
    assert "rig 'rig-b' has no camera 'CAM_BACK'; its cameras: CAM_FRONT" in capsys.readouterr().err


# -- 7: what inspect, viz and prepare say -------------------------------------------------------------------------


def test_inspect_lists_the_bad_files_and_why(layout, tmp_path, capsys):
    root = layout.copy("kitti_object", tmp_path)
    velo = root / "training" / "velodyne" / "000000.bin"
    velo.write_bytes(velo.read_bytes()[:-6])
    (root / "training" / "image_2" / "000001.png").unlink()
    assert main(["inspect", "kitti_object", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "bad_files: 2" in out
    assert f"  000000: {velo}: truncated" in out
    assert f"  000001: {root / 'training' / 'image_2' / '000001.png'}: image file is missing" in out
    for index in (None, tmp_path / "index"):  # checking now, and from an index
        if index is not None:
            prepare("kitti_object", root, index, progress=False)
        info = inspect("kitti_object", root, index)
        assert [(b["frame"], b["file"]) for b in info["bad"]] == [
            ("000000", str(velo)), ("000001", str(root / "training" / "image_2" / "000001.png"))]
        assert info["bad_files"] == 2 and info["frames"] == 0


@pytest.mark.parametrize("dataset", DATASETS)
def test_a_root_without_frames_says_what_it_expected(dataset, tmp_path, capsys):
    pytest.importorskip({"nuscenes": "nuscenes", "waymo": "pyarrow"}.get(dataset, "numpy"))
    for argv in (["inspect", dataset, "--root", str(tmp_path)], ["viz", dataset, "--root", str(tmp_path), "--out",
                                                                 str(tmp_path / "viz")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert str(tmp_path) in err and "expected" in err and "Traceback" not in err, err


def test_waymo_without_a_lidar_component(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    root = layouts.waymo(tmp_path / "waymo")["root"]
    shutil.rmtree(root / "training" / "lidar")
    assert main(["inspect", "waymo", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert (f"{root / 'training'}: no lidar component (lidar/<segment>.parquet: the point clouds); found "
            "camera_calibration, camera_image, lidar_calibration, lidar_segmentation, vehicle_pose") in err


@pytest.mark.parametrize("dataset", DATASETS)
def test_viz_of_a_missing_frame_says_which_and_where(dataset, layout, tmp_path, capsys):
    root = layout.path(dataset)
    assert main(["viz", dataset, "--root", str(root), "--frame", "no/such/frame", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    frames = len(make_reader(dataset, root).records())
    assert f"{root}: no frame 'no/such/frame' among the {frames} {dataset} frames found there (" in err
    assert "ids look like" in err and "None" not in err


@pytest.mark.parametrize("dataset,kind", [(d, k) for d, kinds in FILES.items() for k in kinds])
def test_a_git_lfs_pointer_is_named_as_such(dataset, kind, layout, tmp_path):
    root = layout.copy(dataset, tmp_path)
    path = first(root, FILES[dataset][kind])
    path.write_text(LFS_POINTER)
    reasons = reasons_of(dataset, root, tmp_path / "index")
    assert reasons, f"a Git LFS pointer in place of {path.name} passed"
    expected = f"{path}: a Git LFS pointer (to 1843200 bytes), not the data: fetch the file with `git lfs pull`"
    assert all(reason == expected for reason in reasons), reasons


# -- what a fresh user ran into after the first round (empty files, labels, shared files, inspect's source) -------


def empty_points(path, dataset):
    """Make the point file (or, for Waymo, the first frame's range image) hold no point."""
    if path.suffix == ".npz":
        np.savez(path, points=np.zeros((0, 3)), row=np.zeros(0), col=np.zeros(0), reflectance=np.zeros(0))
    elif path.suffix == ".npy":
        np.save(path, np.zeros((0, 7)))
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        values = rows[0]["[LiDARComponent].range_image_return1.values"]
        values[0::4] = [-1.0] * len(values[0::4])  # no return anywhere
        pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    else:
        path.write_bytes(b"")


@pytest.mark.parametrize("dataset,kind", [(d, "points") for d in DATASETS] + [("nuscenes", "sweep")])
def test_an_empty_point_file_is_a_bad_file_and_prepare_goes_on(dataset, kind, layout, tmp_path, capsys):
    root = layout.copy(dataset, tmp_path)
    path = first(root, FILES[dataset][kind])
    empty_points(path, dataset)
    report = prepare(dataset, root, tmp_path / "index", progress=False)
    assert report.bad, "an empty point file passed prepare"
    for bad in report.bad:
        assert bad["file"] == str(path) and "empty: 0 points; expected at least one point" in bad["reason"], bad
    assert report.frames == len(make_reader(dataset, root).records()) - len(report.bad)
    capsys.readouterr()
    assert main(["inspect", dataset, "--root", str(root), "--check"]) == 0
    assert f"{path}" in capsys.readouterr().out
    frame = report.bad[0]["frame"]
    assert main(["viz", dataset, "--root", str(root), "--frame", frame, "--out", str(tmp_path / "viz")]) == 1
    err = capsys.readouterr().err
    assert "empty: 0 points" in err and "Traceback" not in err


def without(root, pattern):
    for path in root.glob(pattern):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def test_semantickitti_labels_missing_for_some_scans_or_for_a_whole_sequence(layout, tmp_path, capsys):
    root = layout.copy("semantickitti", tmp_path)
    labels = root / "sequences" / "00" / "labels"
    (labels / "000001.label").unlink()  # a labelled sequence with one label file missing: that scan is bad
    report = prepare("semantickitti", root, tmp_path / "some", progress=False)
    assert [(b["frame"], b["file"]) for b in report.bad] == [("00/000001", str(labels / "000001.label"))]
    assert "label file is missing: sequence 00 has labels for 1 of its 2 scans" in report.bad[0]["reason"]
    without(root, "sequences/00/labels")  # no label file at all: an unlabelled sequence (like 11-21), said so
    assert main(["prepare", "semantickitti", "--root", str(root), "--out", str(tmp_path / "none"), "--quiet"]) == 0
    assert "2 frames (2 without point labels)" in capsys.readouterr().out
    assert main(["inspect", "semantickitti", "--root", str(root), "--index", str(tmp_path / "none"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames_without_point_labels"] == {"train": 2}
    # A recipe that trains on labels refuses the split at start, in one line, and leaves no run directory behind.
    argv = ["train", "lidar_seg/synthetic", "data.dataset=semantickitti", f"data.root={root}",
            f"data.index={tmp_path / 'none'}", "data.label_space=semantickitti19", "data.train_split=train",
            "data.val_split=train", f"output_dir={tmp_path / 'runs'}", "name=t", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert (f"xmkd train: error: {tmp_path / 'none'}: labels: 2 of the 2 frames of split 'train' have no point "
            "labels (00/000000, 00/000001); lidar_seg trains and validates on labelled frames") in err
    assert not (tmp_path / "runs").exists()


def test_a_camera_recipe_on_an_index_prepared_without_cameras(layout, tmp_path):
    from xmkd.config import load_config
    from xmkd.recipes import get_recipe

    root = layout.path("nuscenes")
    prepare("nuscenes", root, tmp_path / "index", progress=False, cameras=[])
    recipe = get_recipe("u2mkd")
    for cameras in ("null", "[CAM_FRONT]"):  # every camera, or one by name: the same clear error
        cfg = load_config("u2mkd/synthetic", [f"data.root={root}", f"data.index={tmp_path / 'index'}",
                                              f"data.cameras={cameras}"], schema=recipe.schema)
        with pytest.raises(XmkdError, match="were not prepared: the index was prepared with --cameras none"):
            recipe(cfg, "cpu").frames("synthetic_train")
    assert len(IndexedFrames(tmp_path / "index", "synthetic_train")) > 0  # a LiDAR-only reader may ask for all


def test_waymo_frames_without_segmentation_labels(tmp_path):
    root, _ = waymo_without_a_second_row(tmp_path, "labels")
    report = prepare("waymo", root, tmp_path / "index", progress=False)
    assert not report.bad and report.splits == {"training": 2, "training_labelled": 1}
    assert report.unlabelled == {"training": 1}  # Waymo labels a subset of frames: those are a split of their own
    assert len(IndexedFrames(tmp_path / "index", "training_labelled").require_labels("lidar_seg")) == 1
    with pytest.raises(XmkdDataError, match="1 of the 2 frames of split 'training' have no point labels"):
        IndexedFrames(tmp_path / "index", "training").require_labels("lidar_seg")


def test_one_bad_waymo_segment_does_not_stop_prepare(tmp_path):
    pytest.importorskip("pyarrow")
    root = layouts.waymo(tmp_path / "waymo", image_sizes=((32, 24), (40, 30)))["root"]
    segments = sorted((root / "training" / "lidar").glob("*.parquet"))
    for content, reason in ((LFS_POINTER, "a Git LFS pointer (to 1843200 bytes)"), ("PAR1 not a parquet file",
                                                                                   "unreadable parquet")):
        segments[0].write_text(content)
        report = prepare("waymo", root, tmp_path / "index", progress=False)
        assert [(b["frame"], b["file"]) for b in report.bad] == [(segments[0].stem, str(segments[0]))]
        assert reason in report.bad[0]["reason"]
        assert report.frames == 2 and {r["meta"]["segment"] for r in load_index(tmp_path / "index")["frames"]} == {
            segments[1].stem}


def test_inspect_says_what_it_read_and_checks_the_files_on_demand(layout, tmp_path, capsys):
    root = layout.copy("kitti_object", tmp_path)
    velo = root / "training" / "velodyne" / "000000.bin"
    good = velo.read_bytes()
    velo.write_bytes(good[:-6])
    prepare("kitti_object", root, root / "xmkd_index", progress=False, cameras=[])
    velo.write_bytes(good)  # fixed after prepare: the index still says it is bad, and says when it was written
    assert main(["inspect", "kitti_object", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"source: the index {root / 'xmkd_index' / 'index.json'} (written 20" in out and "--check" in out
    assert "bad_files: 1" in out
    assert main(["inspect", "kitti_object", "--root", str(root), "--check", "--cameras", "none"]) == 0
    out = capsys.readouterr().out
    assert "source: the files (every frame checked now" in out and "bad_files: 0" in out
    assert main(["inspect", "kitti_object", "--root", str(root), "--index", str(tmp_path / "nowhere")]) == 1
    assert f"{tmp_path / 'nowhere'}: no index here" in capsys.readouterr().err
    assert main(["inspect", "kitti_object", "--root", str(root), "--cameras", "image_2"]) == 1
    assert "cameras ['image_2'] were not prepared: the index was prepared with --cameras none" in \
        capsys.readouterr().err
    other = layout.copy("kitti_object", tmp_path / "other")  # another copy: root's index does not describe it
    assert main(["inspect", "kitti_object", "--root", str(other), "--index", str(root / "xmkd_index")]) == 1
    assert f"indexes the dataset at {root.resolve()}, not {other}" in capsys.readouterr().err


@pytest.mark.parametrize("dataset,remove", [("semantickitti", "sequences/00/calib.txt"),
                                            ("kitti_object", "training/calib/000000.txt"),
                                            ("kitti_raw", "raw/*/calib_cam_to_cam.txt")])
def test_missing_camera_calibration_suggests_lidar_only(dataset, remove, layout, tmp_path):
    root = layout.copy(dataset, tmp_path)
    without(root, remove)
    reasons = reasons_of(dataset, root, tmp_path / "index")
    assert reasons and all("calibration file is missing" in r and "or pass --cameras none for LiDAR only" in r
                           for r in reasons), reasons


def test_a_shared_file_is_reported_once_beside_each_frames_own_bad_files(layout, tmp_path, capsys):
    root = layout.copy("semantickitti", tmp_path)
    seq = root / "sequences" / "00"
    (seq / "times.txt").write_text(LFS_POINTER)
    velo = seq / "velodyne" / "000001.bin"
    velo.write_bytes(velo.read_bytes()[:-6])
    (seq / "labels" / "000000.label").write_bytes(b"\0" * 10)
    assert main(["prepare", "semantickitti", "--root", str(root), "--out", str(tmp_path / "i"), "--quiet"]) == 1
    err = capsys.readouterr().err
    lfs = f"{seq / 'times.txt'}: a Git LFS pointer (to 1843200 bytes)"
    assert f"  2 frames (00/000000, 00/000001): {lfs}" in err and err.count(lfs) == 1
    assert f"  00/000001: {velo}: truncated: " in err
    assert (f"  00/000000: {seq / 'labels' / '000000.label'}: truncated: 10 bytes is not a whole number of 4-byte "
            "labels") in err
    assert "3 bad file(s), in 2 frame(s)" in err


def test_kitti_label_fields_are_named(layout, tmp_path):
    root = layout.copy("kitti_object", tmp_path)
    label = root / "training" / "label_2" / "000000.txt"
    lines = ["Car 0.00 0 -1.57 10.0 10.0 40.0 30.0 1.50 1.60 3.90 1.00 1.50 10.00 0.00"] * 2
    comma = "expected a number (a comma decimal? write a point)"
    for value, expected in (("1,5", f"field 'height' (column 9) is '1,5'; {comma}"),
                            ("nan", "field 'height' (column 9) is 'nan'; expected a finite number"),
                            ("1_000", "field 'height' (column 9) is '1_000'; expected a number")):
        parts = lines[-1].split()
        parts[8] = value
        label.write_text("\n".join(lines[:-1] + [" ".join(parts)]) + "\n")
        assert reasons_of("kitti_object", root, tmp_path / "index") == [f"{label}: line {len(lines)}: {expected}"]


def test_kitti_object_lidar_only_training_frames_need_their_labels_testing_frames_do_not(layout, tmp_path):
    root = layout.copy("kitti_object", tmp_path)
    without(root, "training/image_2")
    without(root, "training/calib/000000.txt")
    without(root, "training/label_2/000000.txt")
    (root / "testing" / "velodyne").mkdir(parents=True)
    shutil.copy(root / "training" / "velodyne" / "000001.bin", root / "testing" / "velodyne" / "000007.bin")
    report = prepare("kitti_object", root, tmp_path / "index", progress=False, cameras=[])
    assert [b["frame"] for b in report.bad] == ["000000", "000000"]  # both of its missing files
    assert "label_2/000000.txt: label file is missing: every training/ frame has a label_2 file" in \
        report.bad[0]["reason"]
    assert "calib/000000.txt: calibration file is missing; the label boxes are in the rectified camera frame" in \
        report.bad[1]["reason"]
    assert "testing/000007" in {r["id"] for r in load_index(tmp_path / "index")["frames"]}


# -- every bad file of a frame, not only the first ----------------------------------------------------------------


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 - 1])  # half a file: a truncated point / label file, a broken image


@pytest.mark.parametrize("dataset", [d for d in DATASETS if d != "waymo"])  # waymo: see the test below
def test_every_bad_file_of_a_frame_is_listed_with_its_reason(dataset, layout, tmp_path, capsys):
    root = layout.copy(dataset, tmp_path)
    kinds = [k for k in ("points", "labels", "image") if k in FILES[dataset]]
    broken = {kind: first(root, FILES[dataset][kind]) for kind in kinds}
    if dataset in ("nuscenes", "a2d2", "virtualkitti"):  # file names do not share the frame's id: break every frame's
        broken = {f"{kind} {p.name}": p for kind in kinds for p in root.glob(FILES[dataset][kind])}
    for name, path in broken.items():  # a truncated point file; a label file or image that is an LFS pointer
        truncate(path) if name.startswith("points") else path.write_text(LFS_POINTER)
    report = prepare(dataset, root, tmp_path / "index", progress=False)
    listed = {b["file"]: b["reason"] for b in report.bad}
    assert set(listed) == {str(p) for p in broken.values()}, (sorted(listed), kinds)
    for name, path in broken.items():
        expected = ("truncated", "unreadable .np") if name.startswith("points") else ("a Git LFS pointer",)
        assert listed[str(path)].startswith(f"{path}: ") and any(e in listed[str(path)] for e in expected), listed
    if dataset not in ("nuscenes", "a2d2", "virtualkitti"):  # one frame, each of its bad files
        assert [b["frame"] for b in report.bad] == [report.bad[0]["frame"]] * len(kinds)
    assert main(["inspect", dataset, "--root", str(root)]) == 0
    assert f"bad_files: {len(broken)}" in capsys.readouterr().out


def test_every_bad_file_of_a_waymo_frame_is_listed(tmp_path):
    pytest.importorskip("pyarrow")
    root = layouts.waymo(tmp_path / "waymo")["root"]
    broken = [first(root, FILES["waymo"][k]) for k in ("image", "labels")]
    for path in broken:
        path.write_text(LFS_POINTER)
    report = prepare("waymo", root, tmp_path / "index", progress=False)
    assert {b["file"] for b in report.bad} == {str(p) for p in broken}
    assert len({b["frame"] for b in report.bad}) * 2 == len(report.bad)


def test_waymo_segment_without_its_lidar_file_and_a_root_without_camera_images(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    root = layouts.waymo(tmp_path / "waymo", image_sizes=((32, 24), (40, 30)))["root"]
    lidar = sorted((root / "training" / "lidar").glob("*.parquet"))[0]
    lidar.unlink()  # its other components stay
    report = prepare("waymo", root, tmp_path / "index", progress=False)
    assert [(b["frame"], b["file"]) for b in report.bad] == [(lidar.stem, str(lidar))]
    assert "lidar file is missing: segment" in report.bad[0]["reason"] and "camera_image" in report.bad[0]["reason"]
    assert report.frames == 2
    shutil.rmtree(root / "training" / "camera_image")
    assert main(["prepare", "waymo", "--root", str(root), "--out", str(tmp_path / "index2"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no camera_image component" in err and "--cameras none" in err and "Traceback" not in err, err
    index = tmp_path / "index3"
    assert prepare("waymo", root, index, progress=False, cameras=[]).frames == 2  # LiDAR only: fine
    # one segment without its image file (the component is there): its frames are bad files naming it
    image = root / "training" / "camera_image"
    image.mkdir()
    shutil.copy(layouts.waymo(tmp_path / "other")["root"] / "training" / "camera_image" / f"{layouts.WAYMO_SEGMENT}"
                ".parquet", image)
    report = prepare("waymo", root, tmp_path / "index4", progress=False)
    missing = {b["file"] for b in report.bad} - {str(lidar)}
    assert len(missing) == 1 and next(iter(missing)).endswith(f"camera_image/{lidar.stem[:-1]}1.parquet"), report.bad


def test_what_inspect_and_viz_say_for_kitti_object(layout, tmp_path, capsys):
    root = layout.path("kitti_object")
    missing = tmp_path / "no_predictions"
    assert main(["viz", "kitti_object", "--root", str(root), "--frame", "000000", "--pred", str(missing), "--out",
                 str(tmp_path / "viz")]) == 1
    err = capsys.readouterr().err
    assert f"{missing}: --pred: prediction folder not found" in err and "label file" not in err, err
    a_file = root / "training" / "label_2" / "000000.txt"
    assert main(["viz", "kitti_object", "--root", str(root), "--frame", "000000", "--pred", str(a_file), "--out",
                 str(tmp_path / "viz")]) == 1
    assert f"{a_file}: --pred: is a file" in capsys.readouterr().err
    missing.mkdir()
    assert main(["viz", "kitti_object", "--root", str(root), "--frame", "000000", "--pred", str(missing), "--out",
                 str(tmp_path / "viz")]) == 1
    assert f"{missing / '000000.txt'}: --pred: no prediction file for frame '000000'" in capsys.readouterr().err
    assert main(["inspect", "kitti_object", "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label_space"] is None  # boxes, no point labels
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["inspect", "kitti_object", "--root", str(empty), "--cameras", "none"]) == 1
    err = capsys.readouterr().err
    assert "expected training/velodyne/<6 digits>.bin (or testing/velodyne/) with calib/, label_2/ beside it" in err
    assert "image_2" not in err


# -- issue 19 tester: a malformed custom split table --------------------------------------------------------------


@pytest.mark.parametrize("table, expected", [
    ('{"train": ["00"], "val": 5}', r"split 'val': expected a JSON object of split name -> list of sequence names "
                                    r"\(strings\); got 5"),
    ('["00"]', r"the top level is a JSON list; expected a JSON object of split name -> list of sequence names"),
    ('{"train": [0]}', r"split 'train': .*; got 0 \(write names as strings, e\.g\. \"00\"\)"),
    ('{"train": ["00"]', r"not valid JSON"),
])
def test_a_malformed_split_table_names_the_file_and_what_was_expected(tmp_path, table, expected):
    # was a TypeError / AttributeError traceback, or (sequence numbers as ints) every frame silently in no split
    (tmp_path / "xmkd_splits.json").write_text(table)
    with pytest.raises(XmkdDataError, match=expected) as err:
        make_reader("semantickitti", tmp_path).split_table()
    assert str(err.value).startswith(str(tmp_path / "xmkd_splits.json"))
    from xmkd.data.readers.base import read_split_table  # nuScenes' <version>/splits.json is read by the same

    (tmp_path / "splits.json").write_text(table)
    with pytest.raises(XmkdDataError, match=expected.replace("sequence", "scene")):
        read_split_table(tmp_path / "splits.json", "scene")


def test_kitti_split_lists_accept_a_byte_order_mark_and_refuse_a_malformed_line(layout, tmp_path):
    # issue 19's tester: a BOM, or one token that is not all digits, made the whole split vanish with exit 0
    root = layout.copy("kitti_object", tmp_path)
    train = root / "ImageSets" / "train.txt"
    ids = train.read_text().split()
    train.write_bytes(b"\xef\xbb\xbf" + "".join(f" {i} \n" for i in ids).encode())
    reader = make_reader("kitti_object", root)
    assert sorted(r["id"] for r in reader.scan(["train"])) == sorted(ids)
    for bad in ("abc", "000001 000002", "1.5"):
        train.write_text(f"{ids[0]}\n{bad}\n")
        with pytest.raises(XmkdDataError, match=r"line 2: expected one frame id of digits per line \(e\.g\. 000123\), "
                                                f"got '{bad}'") as err:
            list(make_reader("kitti_object", root).scan())
        assert str(err.value).startswith(str(train))
    raw = layout.copy("kitti_raw", tmp_path / "raw")
    unlabelled = raw / "ImageSets" / "raw_unlabelled.txt"
    lines = unlabelled.read_text().splitlines()
    unlabelled.write_bytes(b"\xef\xbb\xbf" + "".join(f"{x}\n" for x in lines).encode())
    assert len(list(make_reader("kitti_raw", raw).scan(["raw_unlabelled"]))) == len(lines)
    assert list(make_reader("kitti_object", raw).scan())  # its raw list is not an object split list
    unlabelled.write_text(lines[0] + "\nabc\n")
    with pytest.raises(XmkdDataError, match=r"raw_unlabelled\.txt: line 2: expected `<date>_drive_<n>_sync "):
        list(make_reader("kitti_raw", raw).scan())


# -- calibration and poses: NaN / Inf is a bad file naming the table and field ----------------------------------


def edit_json(path, change):
    rows = json.loads(path.read_text())
    change(rows)
    path.write_text(json.dumps(rows))  # json writes NaN / Infinity, as a broken export does


def nuscenes_lidar_calibration(rows, root):
    sensors = {s["token"] for s in json.loads((root / "v1.0-mini" / "sensor.json").read_text())
               if s["channel"] == "LIDAR_TOP"}
    for row in rows:
        if row["sensor_token"] in sensors:
            row["rotation"][1] = float("inf")


def poison_calibration(dataset, root):
    """Put NaN / Inf into one calibration or pose source of `dataset`; returns (file, what the reason must say)."""
    if dataset == "nuscenes_calibrated_sensor":
        path = root / "v1.0-mini" / "calibrated_sensor.json"
        edit_json(path, lambda rows: nuscenes_lidar_calibration(rows, root))
        return path, "LIDAR_TOP rotation (token "
    if dataset == "nuscenes_ego_pose":
        path = root / "v1.0-mini" / "ego_pose.json"
        edit_json(path, lambda rows: [row.__setitem__("translation", [float("nan"), 0.0, 0.0]) for row in rows])
        return path, "LIDAR_TOP translation (token "
    if dataset == "waymo":
        import pyarrow.parquet as pq

        path = first(root, FILES["waymo"]["camera_calib"])
        table = pq.read_table(path)
        col = "[CameraCalibrationComponent].intrinsic.f_u"
        pq.write_table(table.set_column(table.column_names.index(col), col, [[float("nan")]]), path)
        return path, f"FRONT {col}: nan; expected a finite number"
    if dataset == "a2d2":
        path = root / "cams_lidars.json"
        edit_json(path, lambda cfg: cfg["cameras"]["front_center"]["CamMatrix"][0].__setitem__(0, float("nan")))
        return path, "cameras.front_center.CamMatrix: NaN/Inf; expected finite numbers"
    path = first(root, FILES["kitti_object"]["calib"])  # KITTI's calib files: checked by read_calib_file
    path.write_text(path.read_text().replace("P2: ", "P2: nan ", 1).replace("nan 7", "nan", 1))
    return path, "P2 holds NaN or Inf; expected finite numbers"


@pytest.mark.parametrize("case", ["nuscenes_calibrated_sensor", "nuscenes_ego_pose", "waymo", "a2d2",
                                  "kitti_object"])
def test_non_finite_calibration_or_pose_is_a_bad_file_naming_table_and_field(case, layout, tmp_path):
    dataset = case.split("_")[0] if case.startswith("nuscenes") else case
    root = layout.copy(dataset, tmp_path)
    path, says = poison_calibration(case, root)
    report = prepare(dataset, root, tmp_path / "index", progress=False)
    bad = [b for b in report.bad if b["file"] == str(path)]
    assert bad and all("expected a finite" in b["reason"] or "expected finite" in b["reason"] for b in bad), report.bad
    assert any(says in b["reason"] for b in bad), report.bad  # (nuScenes: sweeps share the row, also listed)
    if dataset in ("nuscenes", "a2d2"):  # every frame uses the poisoned row / file
        assert report.frames == 0
    if case == "nuscenes_calibrated_sensor":  # one LiDAR calibration row, shared by the sweeps: once per frame
        assert len(bad) == len({b["frame"] for b in bad}), bad


# -- a camera asked for by name that a frame lacks ---------------------------------------------------------------


def test_a_requested_camera_that_a_frame_lacks_is_a_bad_file(layout, tmp_path, capsys):
    root = layout.copy("nuscenes", tmp_path)
    report = prepare("nuscenes", root, tmp_path / "index", progress=False, cameras=["CAM_BACK"])
    assert report.frames == 0 and report.bad
    for bad in report.bad:
        assert bad["file"].startswith(str(root / "v1.0-mini" / "sample_data.json"))
        assert ("CAM_BACK: no CAM_BACK camera in this frame (it has CAM_FRONT); pass --cameras CAM_FRONT or "
                "--cameras none for LiDAR only") in bad["reason"]
    assert main(["prepare", "nuscenes", "--root", str(root), "--out", str(tmp_path / "i"), "--cameras", "CAM_BACK",
                 "--quiet"]) == 1
    assert "no CAM_BACK camera in this frame" in capsys.readouterr().err


def test_a_waymo_frame_without_the_requested_camera_is_a_bad_file(tmp_path):
    pytest.importorskip("pyarrow")
    root = layouts.waymo(tmp_path / "waymo")["root"]  # FRONT has an image at the first frame only
    report = prepare("waymo", root, tmp_path / "index", progress=False, cameras=["FRONT"])
    assert report.frames == 1 and len(report.bad) == 1, report.bad
    assert report.bad[0]["file"] == str(first(root, FILES["waymo"]["image"]))
    assert ("FRONT: no FRONT image at timestamp 1100000 (this frame has no camera); pass --cameras none for LiDAR "
            "only") in report.bad[0]["reason"]
    assert prepare("waymo", root, tmp_path / "all", progress=False).frames == 2  # every camera: those it has


# -- KITTI label_2 ranges ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("column,value,expected", [
    (8, "-1", "field 'height' (column 9) is -1; expected a size >= 0 metres for a Car"),
    (10, "-0.5", "field 'length' (column 11) is -0.5; expected a size >= 0 metres for a Car"),
    (2, "7", "field 'occluded' (column 3) is 7; expected 0, 1, 2 or 3"),
    (1, "1.5", "field 'truncated' (column 2) is 1.5; expected a number in [0, 1]"),
])
def test_kitti_label_ranges_are_checked(column, value, expected, layout, tmp_path):
    root = layout.copy("kitti_object", tmp_path)
    label = root / "training" / "label_2" / "000000.txt"
    dontcare = "DontCare -1 -1 -10 1.0 2.0 30.0 40.0 -1 -1 -1 -1000 -1000 -1000 -10"
    parts = "Car 0.00 0 -1.57 10.0 10.0 40.0 30.0 1.50 1.60 3.90 1.00 1.50 10.00 0.00".split()
    label.write_text(f"{dontcare}\n{' '.join(parts)}\n")
    assert reasons_of("kitti_object", root, tmp_path / "ok") == []  # DontCare's -1s are its convention
    parts[column] = value
    label.write_text(f"{dontcare}\n{' '.join(parts)}\n")
    assert reasons_of("kitti_object", root, tmp_path / "index") == [f"{label}: line 2: {expected} (-1 only for "
                                                                    "DontCare)"]


# -- every bad file of a frame, also when its point file holds NaN ------------------------------------------------


def test_nan_points_and_a_short_label_file_and_a_short_times_table_are_all_listed(layout, tmp_path):
    root = layout.copy("semantickitti", tmp_path)
    velo, label = first(root, FILES["semantickitti"]["points"]), first(root, FILES["semantickitti"]["labels"])
    poison(velo, "semantickitti")
    label.write_bytes(label.read_bytes()[:-8])  # two labels short
    times = first(root, FILES["semantickitti"]["times"])
    times.write_text("")  # no time for any scan
    report = prepare("semantickitti", root, tmp_path / "index", progress=False)
    listed = {(b["frame"], b["file"]) for b in report.bad}
    assert {("00/000000", str(velo)), ("00/000000", str(label)), ("00/000000", str(times))} <= listed, listed
    reasons = {b["file"]: b["reason"] for b in report.bad if b["frame"] == "00/000000"}
    assert "labels: " in reasons[str(label)] and "labels for" in reasons[str(label)]


def test_nuscenes_nan_points_and_a_short_lidarseg_file_are_both_listed(layout, tmp_path):
    root = layout.copy("nuscenes", tmp_path)
    velo = first(root, FILES["nuscenes"]["points"])
    poison(velo, "nuscenes")
    token = next(r["token"] for r in json.loads((root / "v1.0-mini" / "sample_data.json").read_text())
                 if r["filename"] == str(velo.relative_to(root)))
    label = root / next(r["filename"] for r in json.loads((root / "v1.0-mini" / "lidarseg.json").read_text())
                        if r["sample_data_token"] == token)
    label.write_bytes(label.read_bytes()[:-1])
    files = {b["file"] for b in prepare("nuscenes", root, tmp_path / "index", progress=False).bad}
    assert {str(velo), str(label)} <= files, files


# -- images, viz and split options ---------------------------------------------------------------------------------


def test_a_16_bit_image_is_refused_not_read_as_white(layout, tmp_path):
    root = layout.copy("kitti_object", tmp_path)
    path = first(root, FILES["kitti_object"]["image"])
    w, h = Image.open(path).size
    Image.fromarray(np.full((h, w), 1000, np.uint16)).save(path)  # a 16-bit greyscale PNG
    assert Image.open(path).mode.startswith("I")
    reasons = reasons_of("kitti_object", root, tmp_path / "index")
    assert len(reasons) == 1 and reasons[0].startswith(f"{path}: a I") and "expected an 8-bit image" in reasons[0]


def test_viz_extent_must_be_positive_and_an_unknown_split_lists_the_splits(layout, tmp_path, capsys):
    root = layout.path("kitti_object")
    for extent in ("-5", "0", "nan"):
        with pytest.raises(SystemExit):
            main(["viz", "kitti_object", "--root", str(root), "--extent", extent, "--out", str(tmp_path / "v")])
        assert f"expected a number of metres > 0, got {extent!r}" in capsys.readouterr().err
    assert main(["prepare", "kitti_object", "--root", str(root), "--out", str(tmp_path / "i"), "--split",
                 "nosuch", "--quiet"]) == 1
    assert "no kitti_object frames in splits ['nosuch']; the splits found there: " in capsys.readouterr().err
    with pytest.raises(XmkdDataError, match=r"no semantickitti frames in splits \['nosuch'\]; the splits found "
                                            r"there: .*train"):
        make_reader("semantickitti", layout.path("semantickitti")).records(["nosuch"])
