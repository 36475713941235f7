"""benchmarks.archive: the copy holds exactly what the tables read, and a table command reads it as an output folder."""

import json
from pathlib import Path

import pytest

import benchmarks.bench_uda as bench_uda
from benchmarks.archive import archive, main, table_files


def _write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _uda_output(root: Path) -> None:
    seed = root / "city" / "seed0"
    val = {"step": bench_uda.STEPS, "kind": "val", "time": 1.0, "miou_2d": 0.4, "miou_3d": 0.5, "miou_xm": 0.6}
    for name in ("source_only", "xmuda"):
        run = seed / "runs" / name
        _write(run / "metrics.jsonl", json.dumps({"step": 10, "kind": "train", "loss": 2.0}) + "\n"
               + json.dumps(val) + "\n")
        _write(run / "config.yaml", "name: " + name)
        if name == "xmuda":
            _write(run / "environment.jsonl", json.dumps({"step": 0, "cpu_capability": "AVX512"}) + "\n")
        _write(run / "checkpoints" / "last.pt", "weights")
        _write(run / name / "val_predictions" / "a.json", "{}")  # inside a run, not beside `runs`
    _write(seed / "results.json", "{}")
    _write(seed / "city-a" / "v1.0-trainval" / "sample.json", "[]")  # the dataset
    _write(seed / "city-a" / "config.yaml", "not a run")
    _write(root / "city" / "table.md", "| row |")
    _write(root / "notes.md", "top")


def test_archive_copies_what_the_tables_read_and_the_table_reads_the_copy(tmp_path, monkeypatch):
    src, dst = tmp_path / "out", tmp_path / "archive"
    _uda_output(src)
    expected = {"city/seed0/results.json", "city/seed0/runs/source_only/config.yaml",
                "city/seed0/runs/source_only/metrics.jsonl", "city/seed0/runs/xmuda/config.yaml",
                "city/seed0/runs/xmuda/metrics.jsonl", "city/seed0/runs/xmuda/environment.jsonl", "notes.md"}
    assert {str(p) for p in table_files(src)} == expected
    archive(src, dst, note="trained at abc1234")
    copied = {str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()}
    assert copied == expected | {"ARCHIVE.md"}
    assert "trained at abc1234" in (dst / "ARCHIVE.md").read_text()
    monkeypatch.setattr(bench_uda, "OUT", dst)
    rows = bench_uda.finished_rows(0, "city")
    assert set(rows) == {"source-only", "xMUDA"} and rows["xMUDA"]["miou_xm"] == 0.6
    # a second seed lands in the same archive; ARCHIVE.md gets a second line
    _write(src / "city" / "seed1" / "runs" / "ftd" / "metrics.jsonl", "{}\n")
    archive(src, dst)
    assert (dst / "city" / "seed1" / "runs" / "ftd" / "metrics.jsonl").is_file()
    assert len((dst / "ARCHIVE.md").read_text().splitlines()) == 2


def test_archive_refuses_a_missing_or_empty_folder(tmp_path, monkeypatch, capsys):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        table_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="nothing to archive"):
        archive(tmp_path / "empty", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    monkeypatch.setattr("sys.argv", ["archive", str(tmp_path / "nope"), str(tmp_path / "dst")])
    with pytest.raises(SystemExit, match="no such folder"):
        main()
