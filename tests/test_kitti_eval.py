"""The KITTI evaluator: hand-built cases of the official protocol, and agreement with an independent
reference implementation (tests/kitti_reference.py) on random prediction sets."""

import json
from pathlib import Path

import numpy as np
import pytest
from kitti_reference import average_precisions  # tests/ is on sys.path under pytest

from xmkd.cli import main
from xmkd.errors import XmkdDataError
from xmkd.eval.kitti import ap_ceiling, evaluate_folders, kitti_report


def line(name, bbox, loc=(0.0, 1.6, 20.0), dims=(1.5, 1.6, 3.9), ry=0.0, alpha=0.0, trunc=0.0, occ=0, score=None):
    s = (f"{name} {trunc:.2f} {occ} {alpha:.2f} {bbox[0]:.2f} {bbox[1]:.2f} {bbox[2]:.2f} {bbox[3]:.2f} "
         f"{dims[0]:.2f} {dims[1]:.2f} {dims[2]:.2f} {loc[0]:.2f} {loc[1]:.2f} {loc[2]:.2f} {ry:.2f}")
    return s + (f" {score:.4f}" if score is not None else "")


def write(folder: Path, frames: dict[str, list[str]]):
    folder.mkdir(parents=True, exist_ok=True)
    for fid, lines in frames.items():
        (folder / f"{fid}.txt").write_text("".join(x + "\n" for x in lines))


def perfect_set(tmp_path, n=50):
    gt, dt = {}, {}
    for i in range(n):
        box = (100.0 + i, 150.0, 180.0 + i, 210.0)
        gt[f"{i:06d}"] = [line("Car", box, loc=(i * 0.1, 1.6, 20.0))]
        dt[f"{i:06d}"] = [line("Car", box, loc=(i * 0.1, 1.6, 20.0), score=1.0 - i / 100)]
    return gt, dt


def test_perfect_detections_give_100(tmp_path):
    gt, dt = perfect_set(tmp_path)
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    r = evaluate_folders(tmp_path / "gt", tmp_path / "dt")
    for metric in ("bbox", "bev", "3d", "aos"):
        for rp in ("R11", "R40"):
            for diff in ("easy", "moderate", "hard"):
                assert r[f"Car/{metric}/{rp}/strict/{diff}"] == pytest.approx(100.0)
    assert r["Pedestrian/3d/R40/strict/easy"] == 0.0


def test_single_detection_follows_the_official_sampling(tmp_path):
    # With one ground-truth box the official code samples one threshold: precision 1 at recall index 0 only.
    write(tmp_path / "gt", {"000000": [line("Car", (100, 150, 180, 210))]})
    write(tmp_path / "dt", {"000000": [line("Car", (100, 150, 180, 210), score=0.9)]})
    r = evaluate_folders(tmp_path / "gt", tmp_path / "dt")
    assert r["Car/bbox/R11/strict/easy"] == pytest.approx(100 / 11) and r["Car/bbox/R40/strict/easy"] == 0.0


def test_dontcare_van_and_difficulty_rules(tmp_path):
    gt, dt = perfect_set(tmp_path)
    # a false detection inside a DontCare region is not a false positive (2D metric)...
    gt["000000"].append(line("DontCare", (600, 100, 700, 200), loc=(-1000, -1000, -1000), dims=(-1, -1, -1), ry=-10))
    dt["000000"].append(line("Car", (610, 110, 690, 190), loc=(5.0, 1.6, 30.0), score=0.999))
    # ...a Car detection on a Van is ignored (neighbouring class)...
    gt["000001"].append(line("Van", (300, 150, 380, 215), loc=(-4.0, 1.6, 25.0)))
    dt["000001"].append(line("Car", (300, 150, 380, 215), loc=(-4.0, 1.6, 25.0), score=0.998))
    # ...and a car 30 px tall is ignored for easy but a miss for moderate.
    gt["000002"].append(line("Car", (800, 150, 860, 180), loc=(8.0, 1.6, 40.0)))
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    r = evaluate_folders(tmp_path / "gt", tmp_path / "dt")
    assert r["Car/bbox/R40/strict/easy"] == pytest.approx(100.0)
    assert r["Car/bbox/R40/strict/moderate"] < 100.0  # the small car is missed
    # Without the DontCare region the stray detection is a false positive.
    gt["000000"] = gt["000000"][:1]
    write(tmp_path / "gt2", gt)
    r2 = evaluate_folders(tmp_path / "gt2", tmp_path / "dt")
    assert r2["Car/bbox/R40/strict/easy"] < 100.0
    assert r2["Car/3d/R40/strict/easy"] < 100.0  # (3D never used DontCare: the stray box was an FP there too)
    assert r["Car/3d/R40/strict/easy"] == r2["Car/3d/R40/strict/easy"]


def random_frames(rng, n):
    names = ["Car", "Car", "Pedestrian", "Cyclist", "Van", "Person_sitting", "DontCare", "Truck"]
    gt, dt = {}, {}
    for f in range(n):
        g, d = [], []
        for _ in range(rng.integers(0, 6)):
            name = names[rng.integers(len(names))]
            x1, y1 = rng.uniform(0, 1000), rng.uniform(100, 300)
            w, h = rng.uniform(15, 120), rng.uniform(15, 100)
            loc = (rng.uniform(-10, 10), rng.uniform(1.2, 2.0), rng.uniform(5, 50))
            dims = (rng.uniform(1.3, 1.9), rng.uniform(0.5, 1.9), rng.uniform(0.6, 4.5))
            ry = rng.uniform(-np.pi, np.pi)
            g.append(line(name, (x1, y1, x1 + w, y1 + h), loc, dims, ry, ry + 0.1, rng.choice([0.0, 0.2, 0.4]),
                          int(rng.integers(0, 3))))
            if name != "DontCare" and rng.random() < 0.8:
                jit = rng.normal(0, 0.4, 3)
                d.append(line(name if rng.random() < 0.85 else "Car",
                              (x1 + rng.normal(0, 6), y1 + rng.normal(0, 6), x1 + w + rng.normal(0, 6),
                               y1 + h + rng.normal(0, 6)), tuple(np.add(loc, jit)), dims, ry + rng.normal(0, 0.3),
                              ry + rng.normal(0, 0.5), score=rng.uniform()))
        for _ in range(rng.integers(0, 3)):
            x1, y1 = rng.uniform(0, 1000), rng.uniform(100, 300)
            d.append(line(["Car", "Pedestrian", "Cyclist"][rng.integers(3)], (x1, y1, x1 + 60, y1 + 45),
                          (rng.uniform(-10, 10), 1.6, rng.uniform(5, 50)), (1.5, 1.6, 3.9), 0.4, 0.2,
                          score=rng.uniform()))
        gt[f"{f:06d}"], dt[f"{f:06d}"] = g, d
    return gt, dt


def parse(lines):
    out = []
    for s in lines:
        p = s.split()
        v = [float(x) for x in p[1:]]
        out.append({"name": p[0], "trunc": v[0], "occ": int(v[1]), "alpha": v[2], "bbox": v[3:7], "dims": v[7:10],
                    "loc": v[10:13], "ry": v[13], "score": v[14] if len(v) > 14 else None})
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_independent_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    gt, dt = random_frames(rng, 25)
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    ours = evaluate_folders(tmp_path / "gt", tmp_path / "dt")
    frames = [(parse(gt[k]), parse(dt[k])) for k in sorted(gt)]
    thresholds = {"strict": {"bbox": 0.7, "bev": 0.7, "3d": 0.7}, "loose": {"bbox": 0.7, "bev": 0.5, "3d": 0.5}}
    ped = {"strict": 0.5, "loose": {"bbox": 0.5, "bev": 0.25, "3d": 0.25}}
    checked = 0
    for cls in ("Car", "Pedestrian", "Cyclist"):
        for setting in ("strict", "loose"):
            for metric in ("bbox", "bev", "3d"):
                for d, diff in enumerate(("easy", "moderate", "hard")):
                    if cls == "Car":
                        min_ov = thresholds[setting][metric]
                    else:
                        min_ov = 0.5 if setting == "strict" else ped["loose"][metric]
                    r11, r40, a11, a40 = average_precisions(frames, cls.lower(), metric, d, min_ov)
                    key = f"{cls}/{metric}/{{}}/{setting}/{diff}"
                    assert ours[key.format("R11")] == pytest.approx(r11, abs=1e-6)
                    assert ours[key.format("R40")] == pytest.approx(r40, abs=1e-6)
                    if metric == "bbox":
                        assert ours[f"{cls}/aos/R11/{setting}/{diff}"] == pytest.approx(a11, abs=1e-6)
                        assert ours[f"{cls}/aos/R40/{setting}/{diff}"] == pytest.approx(a40, abs=1e-6)
                    checked += r40 > 0
    assert checked > 10  # the random sets are not degenerate
    report = kitti_report(tmp_path / "gt", tmp_path / "dt")  # no AP above its class / difficulty's ceiling
    for key, value in report.ap.items():
        cls, _, rp, _, diff = key.split("/")
        assert value <= report.ceiling(cls, int(rp[1:]), diff) + 1e-9
    assert any(n < 41 for n in report.valid_gt.values())


def test_cli_eval_kitti(tmp_path, capsys):
    gt, dt = perfect_set(tmp_path, 10)
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    (tmp_path / "split.txt").write_text("000000\n000003\n")
    assert main(["eval-kitti", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "dt"), "--split",
                 str(tmp_path / "split.txt"), "--json", str(tmp_path / "ap.json")]) == 0
    out = capsys.readouterr().out
    assert "Car AP@0.70, 0.70, 0.70" in out and "bbox AP_R40" in out
    ap = json.loads((tmp_path / "ap.json").read_text())
    aps = {k: v for k, v in ap.items() if k not in ("valid_gt", "ceiling", "warnings")}
    assert len(aps) == 3 * 4 * 2 * 2 * 3 and "Cyclist/aos/R11/loose/hard" in ap
    assert ap["valid_gt"]["Car/easy"] == 2 and ap["ceiling"]["Car/R40/easy"] == pytest.approx(100 / 40)
    assert ap["warnings"] == []
    (tmp_path / "dt" / "000003.txt").write_text("Car 0 0 0 1 2 3\n")
    assert main(["eval-kitti", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "dt")]) == 1
    assert "000003.txt: line 1: expected 16 (with a score) columns" in capsys.readouterr().err


def eval_kitti(tmp_path, *extra):
    return main(["eval-kitti", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "dt"), *extra])


def test_prediction_folder_must_cover_every_frame(tmp_path, capsys):
    # As the devkit: every listed frame needs a file; a wrong folder must not print a table of zeros and pass.
    gt, dt = perfect_set(tmp_path, 3)
    write(tmp_path / "gt", gt)
    assert eval_kitti(tmp_path) == 1
    assert "dt: prediction folder not found" in capsys.readouterr().err
    assert main(["eval-kitti", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "gt" / "000000.txt")]) == 1
    assert "000000.txt: is a file; --pred takes the folder" in capsys.readouterr().err
    (tmp_path / "dt").mkdir()
    assert eval_kitti(tmp_path) == 1
    err = capsys.readouterr().err
    assert "no prediction file for 3 of the 3 frames: 000000.txt, 000001.txt, 000002.txt" in err
    assert "holds no *.txt files" in err and "AP_R40" not in capsys.readouterr().out
    write(tmp_path / "dt", {str(int(k)): v for k, v in dt.items()})  # 0.txt, 1.txt, 2.txt
    assert eval_kitti(tmp_path) == 1
    assert "e.g. 0.txt for frame 000000): name each file by the frame id, 000000.txt" in capsys.readouterr().err
    write(tmp_path / "dt" / "data", dt)  # the devkit's results/data layout, one level down
    assert eval_kitti(tmp_path) == 1
    assert f"pass --pred {tmp_path / 'dt' / 'data'}" in capsys.readouterr().err
    write(tmp_path / "dt", {k: dt[k] for k in ("000000", "000002")})  # partial coverage
    assert eval_kitti(tmp_path) == 1
    assert "no prediction file for 1 of the 3 frames: 000001.txt" in capsys.readouterr().err
    assert eval_kitti(tmp_path, "--allow-missing") == 0
    out, err = capsys.readouterr()
    assert "warning:" in err and "no prediction file for 1 of the 3 frames" in err and "counted as frames" in err
    assert "bbox AP_R40" in out
    full = kitti_report(tmp_path / "gt", tmp_path / "dt" / "data")
    partial = kitti_report(tmp_path / "gt", tmp_path / "dt", allow_missing=True)
    assert partial.ap["Car/3d/R40/strict/easy"] < full.ap["Car/3d/R40/strict/easy"]  # the missed frame counts
    (tmp_path / "empty").mkdir()
    with pytest.raises(XmkdDataError, match="no prediction file for 3 of the 3 frames.*nothing to evaluate"):
        kitti_report(tmp_path / "gt", tmp_path / "empty", allow_missing=True)


@pytest.mark.parametrize(("column", "value"), [(15, "nan"), (15, "inf"), (11, "NaN"), (4, "-inf"), (8, "Infinity")])
def test_non_finite_values_are_refused(tmp_path, column, value):
    gt, dt = perfect_set(tmp_path, 2)
    parts = dt["000001"][0].split()
    parts[column] = value
    dt["000001"] = [line("Car", (1, 2, 3, 40), score=0.5), " ".join(parts)]
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    name = ["type", "truncated", "occluded", "alpha", "bbox_left", "bbox_top", "bbox_right", "bbox_bottom", "height",
            "width", "length", "x", "y", "z", "rotation_y", "score"][column]
    with pytest.raises(XmkdDataError, match=rf"000001.txt: line 2: field '{name}' \(column {column + 1}\) is "
                                            rf"'{value}'; expected a finite number"):
        evaluate_folders(tmp_path / "gt", tmp_path / "dt")
    gt["000000"][0] = gt["000000"][0].replace("20.00", value)  # ground truth: the same check
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", perfect_set(tmp_path, 2)[1])
    with pytest.raises(XmkdDataError, match=rf"gt/000000.txt: line 1: field 'z' .* is '{value}'"):
        evaluate_folders(tmp_path / "gt", tmp_path / "dt")


@pytest.mark.parametrize("n", [1, 5, 38, 41])
def test_ap_ceiling_is_what_perfect_detections_score(tmp_path, n):
    gt, dt = perfect_set(tmp_path, n)
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    report = kitti_report(tmp_path / "gt", tmp_path / "dt")
    assert report.valid_gt["Car/moderate"] == n and report.valid_gt["Pedestrian/easy"] == 0
    for rp in (11, 40):
        cap = report.ceiling("Car", rp, "hard")
        assert cap == ap_ceiling(n, rp)
        for metric in ("bbox", "bev", "3d", "aos"):
            assert report.ap[f"Car/{metric}/R{rp}/loose/hard"] == pytest.approx(cap)
    assert ap_ceiling(n, 40) == pytest.approx(100 * (n - 1) / 40 if n < 41 else 100.0)
    assert ap_ceiling(n, 11) == pytest.approx(100 * -(-n // 4) / 11 if n < 41 else 100.0)


def test_ceiling_in_the_table_and_json(tmp_path, capsys):
    gt, dt = perfect_set(tmp_path, 5)
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    assert eval_kitti(tmp_path, "--json", str(tmp_path / "ap.json")) == 0
    out = capsys.readouterr().out
    assert "Car AP@0.70, 0.70, 0.70 (strict):  [valid ground truth 5 / 5 / 5]" in out
    assert "3d   AP_R40: 10.0000 (max 10.00), 10.0000 (max 10.00), 10.0000 (max 10.00)" in out
    assert "3d   AP_R11: 18.1818 (max 18.18)" in out and "0.0000 (no GT)" in out and "max X:" in out
    ap = json.loads((tmp_path / "ap.json").read_text())
    assert ap["ceiling"]["Car/R40/moderate"] == pytest.approx(10.0) and ap["valid_gt"]["Cyclist/hard"] == 0
    gt, dt = perfect_set(tmp_path, 41)
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    assert eval_kitti(tmp_path) == 0
    out = capsys.readouterr().out
    assert "Car AP@0.70, 0.70, 0.70 (strict):  [valid ground truth 41 / 41 / 41]" not in out
    assert "bbox AP_R40: 100.0000, 100.0000, 100.0000\n" in out


def test_placeholder_2d_boxes_are_warned_about(tmp_path, capsys):
    gt, dt = perfect_set(tmp_path, 4)
    write(tmp_path / "gt", gt)
    no_box = {k: [" ".join(v[0].split()[:4] + ["-1"] * 4 + v[0].split()[8:])] for k, v in dt.items()}
    write(tmp_path / "dt", no_box)
    assert eval_kitti(tmp_path) == 0
    out, err = capsys.readouterr()
    assert "warning:" in err and "every one of the 4 predictions has a -1 2D box, so every AP is 0" in err
    assert "3d   AP_R11: 0.0000 (max 9.09), 0.0000 (max 9.09), 0.0000 (max 9.09)" in out  # perfect 3D, yet dropped
    no_box["000001"] = dt["000001"]
    write(tmp_path / "dt", no_box)
    report = kitti_report(tmp_path / "gt", tmp_path / "dt")
    assert report.warnings == [report.warnings[0]] and "3 of the 4 predictions have a -1 2D box" in report.warnings[0]
    write(tmp_path / "dt", dt)
    assert kitti_report(tmp_path / "gt", tmp_path / "dt").warnings == []
    write(tmp_path / "dt", {k: [] for k in dt})
    assert "hold no detections at all" in kitti_report(tmp_path / "gt", tmp_path / "dt").warnings[0]


def test_unknown_class_names_in_predictions_are_warned_about(tmp_path, capsys):
    gt, dt = perfect_set(tmp_path, 4)
    write(tmp_path / "gt", gt)
    dt["000002"] = [dt["000002"][0].replace("Car", "Kar", 1), dt["000002"][0].replace("Car", "car", 1)]
    write(tmp_path / "dt", dt)
    assert eval_kitti(tmp_path) == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'dt'}: 1 prediction(s) in 1 file(s) have a class name KITTI does not know and are " \
        f"ignored by every metric ({tmp_path / 'dt' / '000002.txt'}: Kar); expected one of Car, Pedestrian" in err, err


def test_a_byte_order_mark_is_accepted_and_unknown_ground_truth_names_are_warned_about(tmp_path, capsys):
    # issue 19's tester: a BOM glued onto the first class name dropped the first ground-truth box silently
    # (AP fell below 100), showed up in warnings and split-file errors; unknown GT class names were not reported
    gt, dt = perfect_set(tmp_path)
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    for folder in ("gt", "dt"):
        path = tmp_path / folder / "000000.txt"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (tmp_path / "split.txt").write_bytes(b"\xef\xbb\xbf" + "".join(f"{i:06d}\n" for i in range(50)).encode())
    report = kitti_report(tmp_path / "gt", tmp_path / "dt", tmp_path / "split.txt")
    assert report.ap["Car/3d/R40/strict/easy"] == pytest.approx(100.0) and not report.warnings
    gt["000003"] = [gt["000003"][0].replace("Car", "Kar", 1)]
    write(tmp_path / "gt", gt)
    assert eval_kitti(tmp_path) == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'gt'}: 1 ground-truth box(es) in 1 file(s) have a class name KITTI does not know " \
        f"and are ignored by every metric ({tmp_path / 'gt' / '000003.txt'}: Kar)" in err, err


LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 1843\n")


@pytest.mark.parametrize("folder", ["gt", "dt"])
def test_a_git_lfs_pointer_is_named_as_such(tmp_path, folder):
    gt, dt = perfect_set(tmp_path, 3)
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    path = tmp_path / folder / "000001.txt"
    path.write_text(LFS_POINTER)
    with pytest.raises(XmkdDataError) as err:
        kitti_report(tmp_path / "gt", tmp_path / "dt")
    assert str(err.value) == (f"{path}: a Git LFS pointer (to 1843 bytes), not the data: fetch the file with "
                              "`git lfs pull`")


def test_bad_paths_and_files_are_clean_errors(tmp_path, capsys):
    gt, dt = perfect_set(tmp_path, 3)
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    cases = []
    assert eval_kitti(tmp_path, "--split", str(tmp_path / "gt")) == 1  # a folder where a file is expected
    cases.append(f"{tmp_path / 'gt'}: is a folder; expected a split list file")
    (tmp_path / "empty.txt").write_text("\n")
    assert eval_kitti(tmp_path, "--split", str(tmp_path / "empty.txt")) == 1
    cases.append(f"{tmp_path / 'empty.txt'}: lists no frame ids; expected one frame id (e.g. 000123) per line")
    assert eval_kitti(tmp_path, "--json", str(tmp_path / "gt")) == 1  # checked before the work: no table printed
    cases.append(f"{tmp_path / 'gt'}: is a folder; expected a file path for a JSON file")
    out, err = capsys.readouterr()
    assert out == ""
    (tmp_path / "dt" / "000002.txt").write_bytes(dt["000002"][0].encode() + b"\n\xff\xfe Car\n")
    assert eval_kitti(tmp_path) == 1
    cases.append(f"{tmp_path / 'dt' / '000002.txt'}: line 2: byte 0xff is not UTF-8 text; expected a plain text "
                 "prediction file")
    write(tmp_path / "dt", dt)
    (tmp_path / "dt" / "000001.txt").unlink()
    (tmp_path / "dt" / "000001.txt").mkdir()  # a folder named like a prediction file is not "no detections"
    assert eval_kitti(tmp_path, "--allow-missing") == 1
    cases.append(f"{tmp_path / 'dt' / '000001.txt'}: is a folder; expected a prediction file")
    err += capsys.readouterr().err
    for case in cases:
        assert f"xmkd eval-kitti: error: {case}" in err
    assert "Traceback" not in err and "warning" not in err


@pytest.mark.parametrize(("value", "expected"), [
    ("0,9", "field 'score' (column 16) is '0,9'; expected a number (a comma decimal? write a point)"),
    ("1_000", "field 'score' (column 16) is '1_000'; expected a number"),
    ("0.5x", "field 'score' (column 16) is '0.5x'; expected a number")])
def test_numbers_are_parsed_strictly(tmp_path, value, expected):
    gt, dt = perfect_set(tmp_path, 2)
    dt["000001"] = [" ".join(dt["000001"][0].split()[:15] + [value])]
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", dt)
    with pytest.raises(XmkdDataError) as err:
        evaluate_folders(tmp_path / "gt", tmp_path / "dt")
    assert str(err.value) == f"{tmp_path / 'dt' / '000001.txt'}: line 1: {expected}"


def test_one_renamed_file_is_one(tmp_path, capsys):
    gt, dt = perfect_set(tmp_path, 3)
    write(tmp_path / "gt", gt)
    write(tmp_path / "dt", {"000000": dt["000000"], "000002": dt["000002"], "1": dt["000001"]})
    assert eval_kitti(tmp_path) == 1
    assert "(1 is there under another spelling of the number (e.g. 1.txt for frame 000001)" in capsys.readouterr().err
