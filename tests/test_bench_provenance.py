"""benchmarks.provenance: the digest follows the dataset's bytes and paths, not its derived index."""

import json

import pytest

from benchmarks.archive import table_files
from benchmarks.provenance import FILE, digest, main, record


def _dataset(root):
    (root / "samples" / "CAM_FRONT").mkdir(parents=True)
    (root / "samples" / "CAM_FRONT" / "a.jpg").write_bytes(b"\xff\xd8image")
    (root / "v1.0-mini").mkdir()
    (root / "v1.0-mini" / "sample.json").write_text("[]")
    (root / "xmkd_index").mkdir()
    (root / "xmkd_index" / "index.json").write_text('{"root": "/somewhere"}')
    return root


def test_digest_changes_with_a_byte_or_a_name_and_ignores_the_derived_index(tmp_path):
    root = _dataset(tmp_path / "rig-a")
    first = digest(root)
    assert first["files"] == 2 and first["bytes"] == len(b"\xff\xd8image") + 2
    assert digest(_dataset(tmp_path / "copy")) == first  # the same bytes elsewhere
    (root / "xmkd_index" / "index.json").write_text('{"root": "/elsewhere"}')
    assert digest(root) == first
    (root / "samples" / "CAM_FRONT" / "a.jpg").write_bytes(b"\xff\xd8imagf")
    changed = digest(root)["sha256"]
    assert changed != first["sha256"]
    (root / "samples" / "CAM_FRONT" / "a.jpg").rename(root / "samples" / "CAM_FRONT" / "b.jpg")
    assert digest(root)["sha256"] != changed
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        digest(tmp_path / "nope")


def test_record_lands_beside_runs_where_the_archive_keeps_it(tmp_path):
    seed = tmp_path / "rig" / "seed1"
    _dataset(seed / "rig-a")
    (seed / "runs" / "xmuda").mkdir(parents=True)
    (seed / "runs" / "xmuda" / "metrics.jsonl").write_text("{}\n")
    out = record(seed, {"rig-a": seed / "rig-a"})
    assert json.loads((seed / FILE).read_text()) == out and set(out) == {"rig-a"}
    assert f"rig/seed1/{FILE}" in {str(p) for p in table_files(tmp_path)}


def test_the_command_names_what_is_wrong(tmp_path, capsys):
    seed = tmp_path / "seed0"
    _dataset(seed / "kitti")
    main([str(seed), "kitti/"])  # a trailing slash names the same folder
    assert set(json.loads((seed / FILE).read_text())) == {"kitti"} and "kitti: " in capsys.readouterr().out
    for argv, message in (([str(tmp_path / "nope"), "kitti"], "not a folder"),
                          ([str(seed), "."], "directly inside"), ([str(seed), "../seed0/kitti"], "directly inside"),
                          ([str(seed), "missing"], "no such dataset folder")):
        with pytest.raises(SystemExit, match=message):
            main(argv)
