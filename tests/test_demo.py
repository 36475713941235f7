"""`xmkd demo` end to end at the smoke-test budget: every stage runs and every promised output exists."""

import json

import torch

from xmkd.cli import main
from xmkd.config import load_config
from xmkd.recipes import get_recipe


def test_demo_tiny_budget(tmp_path, capsys):
    assert main(["demo", "--budget", "tiny", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "point_miou" in out and "results:" in out
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    assert set(rows) == {"teacher", "student_lidar_only", "camera_only", "student_nokd", "student_kd",
                         "teacher_scarce", "student_nokd_scarce", "student_kd_scarce"}
    assert set(results["run_seconds"]) == set(rows)
    assert all("point_miou" in r for r in rows.values())
    assert all("pixel_miou" in rows[k] for k in ("student_kd", "student_nokd", "camera_only"))
    assert 0 < rows["camera_only"]["coverage"] < 100
    assert "point_miou_drop2" in rows["student_kd"]
    assert "KD" in results["verdict"] and "full labels" in results["verdict"] and "label-scarce" in results["verdict"]
    scarce = results["scarce"]
    assert 0 < len(scarce["labelled_frames"]) < scarce["training_frames"]
    # the label-scarce teacher trained on exactly the frames whose labels the scarce students kept
    lidar_seg = get_recipe("lidar_seg")
    teacher = lidar_seg(load_config(tmp_path / "runs" / "teacher_scarce" / "config.yaml", schema=lidar_seg.schema),
                        torch.device("cpu"))
    assert sorted(r["id"] for r in teacher.train_dataset().frames.records) == scarce["labelled_frames"]
    for name in ("training_curves.png", "point_miou.png", "per_class_iou.png", "table.txt", "predictions_0.png",
                 "predictions_1.png"):
        assert (tmp_path / "report" / name).is_file()
    assert results["reused_rows"] == []
    # a second run reuses the dataset and the finished runs, and keeps the seconds they took to train
    assert main(["demo", "--budget", "tiny", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["reused_rows"] == list(rows) and again["run_seconds"] == results["run_seconds"]
    assert again["rows"] == rows


def test_training_threads_leave_a_core_for_the_data_worker(monkeypatch):
    import xmkd.demo as demo

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for cores, jobs, threads in ((1, 1, 1), (2, 1, 1), (8, 1, 7), (2, 2, 1), (8, 2, 4), (3, 8, 1)):
        monkeypatch.setattr(demo, "available_cores", lambda c=cores: c)
        assert demo.training_threads(jobs) == threads
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's setting wins
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert demo.training_threads(1) == demo.training_threads(4) == 2


def _tiny_plan(tmp_path):
    from xmkd.demo import BUDGETS, make_dataset, plan

    budget = BUDGETS["tiny"]
    return plan(budget, make_dataset(tmp_path / "data", 0, budget), tmp_path / "runs", 0), tmp_path / "runs"


def test_rows_that_others_distil_from_start_first(tmp_path):
    from xmkd.demo import row_dependencies, schedule

    rows, runs = _tiny_plan(tmp_path)
    deps = row_dependencies(rows, runs)
    assert deps["student_kd"] == {"teacher"} and deps["student_kd_scarce"] == {"teacher_scarce"}
    assert all(not deps[n] for n in rows if n not in ("student_kd", "student_kd_scarce"))
    assert schedule(rows, runs) == ["teacher", "teacher_scarce", "student_kd", "student_kd_scarce",
                                    "student_lidar_only", "camera_only", "student_nokd", "student_nokd_scarce"]


def test_rows_side_by_side_train_as_one_after_the_other(tmp_path, monkeypatch):
    """Two rows at a time, each in a spawned process, give the same runs as the in-process sequence (same
    metrics, bit-identical weights), and a student starts only after the teacher it distils from."""
    import xmkd.demo as demo
    from xmkd.engine.checkpoint import load

    monkeypatch.setattr(demo, "training_threads", lambda jobs=1: 1)
    rows, _ = _tiny_plan(tmp_path)
    keep = ("teacher", "student_nokd", "student_kd")
    results = {}
    for jobs in (1, 2):
        runs = tmp_path / f"runs{jobs}"
        subset = {n: (c, [o.replace(str(tmp_path / "runs"), str(runs)) for o in ov])
                  for n, (c, ov) in rows.items() if n in keep}
        done = []
        metrics, seconds = demo.train_rows(subset, runs, lambda n, s, d=done: d.append(n), jobs=jobs)
        assert list(metrics) == list(seconds) == list(keep)
        assert done.index("teacher") < done.index("student_kd")
        results[jobs] = (metrics, runs)
    (m1, r1), (m2, r2) = results[1], results[2]
    assert m1 == m2
    for name in keep:
        a, b = (load(r / name / "checkpoints" / "last.pt")["models"] for r in (r1, r2))
        assert a.keys() == b.keys()
        for net in a:
            assert a[net].keys() == b[net].keys() and all(torch.equal(a[net][k], b[net][k]) for k in a[net])


def test_a_failing_row_stops_the_rows_that_need_it(tmp_path):
    import pytest

    from xmkd.demo import train_rows
    from xmkd.errors import XmkdConfigError

    rows, runs = _tiny_plan(tmp_path)
    config, overrides = rows["teacher"]
    subset = {"teacher": (config, [*overrides, "train.no_such_key=1"]), "student_kd": rows["student_kd"]}
    with pytest.raises(XmkdConfigError, match="no_such_key"):
        train_rows(subset, runs, jobs=2)
    assert not (runs / "student_kd").exists()


def test_earlier_run_seconds_of_a_missing_or_foreign_results_file(tmp_path):
    from xmkd.demo import _earlier_run_seconds

    path = tmp_path / "results.json"
    assert _earlier_run_seconds(path) == {}
    for text in ("", "{trunc", "[]", '{"run_seconds": 5}', '{"run_seconds": null}', '{"run_seconds": ["ab"]}',
                 '{"run_seconds": {"teacher": "x"}}', '{"run_seconds": {"teacher": true}}'):
        path.write_text(text)
        assert _earlier_run_seconds(path) == {}
    path.write_text('{"run_seconds": {"teacher": 12.5}}')
    assert _earlier_run_seconds(path) == {"teacher": 12.5}
