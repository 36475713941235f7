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
    # a second run reuses the dataset and the finished runs
    assert main(["demo", "--budget", "tiny", "--out", str(tmp_path)]) == 0


def test_training_threads_leave_a_core_for_the_data_worker(monkeypatch):
    from xmkd.demo import training_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for cores, threads in ((1, 1), (2, 1), (8, 7)):
        monkeypatch.setattr(torch, "get_num_threads", lambda c=cores: c)
        assert training_threads() == threads
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's setting wins
    assert training_threads() == 8
