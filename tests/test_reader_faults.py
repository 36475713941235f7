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
    for bad in report.bad:
        assert bad["file"] == str(path) and "2 row(s) hold NaN or Inf" in bad["reason"], bad
        assert "expected finite numbers" in bad["reason"]
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
    # An index prepared before times.txt was cut: merging sweeps names the file instead of an IndexError.
    with pytest.raises(XmkdDataError, match=r"times\.txt: no line for scan 1"):
        IndexedFrames(tmp_path / "before", "train", sweeps=1)[0]
    assert IndexedFrames(tmp_path / "before", "train", sweeps=0)[0].num_points > 0  # without sweeps it is not read
    (seq / "times.txt").write_text("0.0\nabc\n")
    reasons = reasons_of("semantickitti", root, tmp_path / "bad")
    assert reasons and all("times.txt: line 2: expected 1 numbers, got 'abc'" in r for r in reasons)
    (seq / "times.txt").write_text("\n".join(times) + "\n")
    poses = (seq / "poses.txt").read_text().splitlines()
    (seq / "poses.txt").write_text(poses[0] + "\n" + " ".join(poses[1].split()[:11]) + "\n")
    reasons = reasons_of("semantickitti", root, tmp_path / "bad2")
    assert reasons and all("poses.txt: line 2: 11 values, expected 12" in r for r in reasons)


def test_waymo_vehicle_pose_without_a_row_for_a_frame(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    root = layouts.waymo(tmp_path / "waymo")["root"]
    path = first(root, FILES["waymo"]["poses"])
    pq.write_table(pa.Table.from_pylist(pq.read_table(path).to_pylist()[:1], schema=pq.read_schema(path)), path)
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
