"""U2MKD's label-scarce regime: which frames keep labels, the same frames for teacher and student, segmentation
losses only on labelled frames and the KL on every frame."""

from pathlib import Path

import pytest
import torch
from conftest import tiny_nuscenes
from omegaconf import OmegaConf

from xmkd.config import load_config, to_yaml
from xmkd.data.index import IndexedFrames
from xmkd.data.labelled import LabelledFrames, check_no_paste, labelled_ids
from xmkd.engine.checkpoint import save
from xmkd.errors import XmkdConfigError
from xmkd.models.point.sparse_unet import SparseUNet
from xmkd.recipes import get_recipe

REPO = Path(__file__).resolve().parents[1]
SMALL = ["model.backbone.cr=0.125", "model.decoder_width=32", "model.max_points=3000",
         "model.teacher.backbone.cr=0.125", "data.image_size=[96,64]", "data.num_workers=0"]
IDS = [f"scene-{s:04d}/{f:02d}" for s in range(6) for f in range(8)]


def opts(**kw):
    return OmegaConf.merge(OmegaConf.structured(LabelledFrames), kw)


def test_labelled_ids_are_a_seeded_fixed_share_nested_across_fractions():
    eighth = labelled_ids(IDS, opts(fraction=0.125))
    assert len(eighth) == 6 and eighth <= set(IDS)
    assert labelled_ids(list(reversed(IDS)), opts(fraction=0.125)) == eighth  # the split's order does not matter
    assert eighth < labelled_ids(IDS, opts(fraction=0.25))  # a smaller share labels a subset of a larger one
    assert labelled_ids(IDS, opts(fraction=0.125, seed=1)) != eighth
    assert labelled_ids(IDS, opts(fraction=0.001)) and not labelled_ids(IDS, opts(fraction=0.0))
    assert labelled_ids(IDS, opts(fraction=1.0)) == set(IDS)
    assert labelled_ids(IDS, opts(fraction=0.5, frames=[IDS[3]])) == {IDS[3]}  # an explicit list wins
    with pytest.raises(XmkdConfigError, match="model.labelled.frames.*nope"):
        labelled_ids(IDS, opts(frames=["nope"]))
    with pytest.raises(XmkdConfigError, match="fraction"):
        labelled_ids(IDS, opts(fraction=1.5))
    with pytest.raises(XmkdConfigError, match="paste"):
        check_no_paste(opts(fraction=0.5), "data/instances")
    check_no_paste(opts(), "data/instances")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_nuscenes(tmp_path_factory.mktemp("scarce") / "nus", frames=6, frames_per_scene=2, image_size=(96, 54),
                         cameras=("CAM_FRONT", "CAM_FRONT_LEFT"))


def config(name, data, tmp_path, *extra):
    small = SMALL if name != "lidar_seg" else ["model.backbone.cr=0.125", "model.max_points=3000",
                                               "data.num_workers=0"]
    return load_config(REPO / "configs" / name / "synthetic.yaml",
                       [f"data.root={data}", f"output_dir={tmp_path}", "data.train_split=mini_train",
                        "data.val_split=mini_train", *small, *extra], schema=get_recipe(name).schema)


def make_recipe(name, data, tmp_path, *extra):
    recipe = get_recipe(name)(config(name, data, tmp_path, *extra), torch.device("cpu"))
    recipe.build()
    return recipe


def teacher_checkpoint(path: Path, data, tmp_path, *labelled, with_config=True) -> Path:
    """A lidar_seg checkpoint as the trainer writes it (weights + the run's resolved config)."""
    student = config("u2mkd", data, tmp_path)
    state = {"models": {"net": SparseUNet(4, 16, student.model.teacher.backbone).state_dict()}}
    if with_config:
        state["config"] = to_yaml(config("lidar_seg", data, tmp_path, *labelled))
    save(path, state)
    return path


def train_ids(dataset) -> list[str]:
    return [r["id"] for r in dataset.frames.records]


def all_ids(data) -> list[str]:
    return sorted(r["id"] for r in IndexedFrames(data / "xmkd_index", "mini_train").records)


def test_teacher_and_student_keep_the_same_labelled_frames(data, tmp_path):
    half = ["model.labelled.fraction=0.5", "model.labelled.seed=3"]
    teacher = make_recipe("lidar_seg", data, tmp_path, *half)
    student = make_recipe("u2mkd", data, tmp_path, "model.kd=false", *half)
    camera = make_recipe("camera_seg", data, tmp_path, *half)
    everything = train_ids(student.train_dataset())
    assert len(everything) == 4  # the student keeps every frame, the unlabelled ones without labels
    labelled = set(train_ids(teacher.train_dataset()))
    assert len(labelled) == 2 and labelled == student.labelled_training_ids() == set(train_ids(camera.train_dataset()))
    dropped = make_recipe("u2mkd", data, tmp_path, "model.kd=false", "model.unlabelled=drop", *half)
    assert set(train_ids(dropped.train_dataset())) == labelled
    with pytest.raises(XmkdConfigError, match="no labelled training frame"):
        make_recipe("lidar_seg", data, tmp_path, "model.labelled.fraction=0").train_dataset()


def test_a_teacher_with_labels_the_student_lacks_is_refused(data, tmp_path):
    ids = all_ids(data)
    mine = [f"model.labelled.frames=[{ids[0]},{ids[1]}]"]
    same = teacher_checkpoint(tmp_path / "same.pt", data, tmp_path, *mine)
    fewer = teacher_checkpoint(tmp_path / "fewer.pt", data, tmp_path, f"model.labelled.frames=[{ids[1]}]")
    full = teacher_checkpoint(tmp_path / "full.pt", data, tmp_path)
    bare = teacher_checkpoint(tmp_path / "bare.pt", data, tmp_path, with_config=False)
    for ok in (same, fewer):
        make_recipe("u2mkd", data, tmp_path, f"model.teacher.checkpoint={ok}", *mine)
    with pytest.raises(XmkdConfigError, match="labels on 2 frame"):
        make_recipe("u2mkd", data, tmp_path, f"model.teacher.checkpoint={full}", *mine)
    with pytest.raises(XmkdConfigError, match="holds no config"):
        make_recipe("u2mkd", data, tmp_path, f"model.teacher.checkpoint={bare}", *mine)
    make_recipe("u2mkd", data, tmp_path, f"model.teacher.checkpoint={full}")  # every frame labelled: no check
    make_recipe("u2mkd", data, tmp_path, f"model.teacher.checkpoint={full}", "model.teacher.check_labels=false", *mine)


def test_segmentation_losses_skip_unlabelled_frames_and_the_kl_covers_them(data, tmp_path):
    ids = all_ids(data)
    mine = f"model.labelled.frames=[{ids[0]}]"
    ckpt = teacher_checkpoint(tmp_path / "teacher.pt", data, tmp_path, mine)
    recipe = make_recipe("u2mkd", data, tmp_path, f"model.teacher.checkpoint={ckpt}", mine, "model.camera_drop=1")
    recipe.nets["teacher"].eval()
    ds = recipe.train_dataset()
    order = [i for i, r in enumerate(ds.frames.records) if r["id"] in (ids[0], ids[1])]
    first, second = order if ds.frames.records[order[0]]["id"] == ids[0] else order[::-1]
    samples = [ds[(0, first)], ds[(0, second)]]  # labelled, then unlabelled
    assert (samples[0]["labels"] != 255).any() and (samples[1]["labels"] == 255).all()
    batch = recipe.collate(samples)
    captured = {}
    forward = recipe._forward

    def keep_logits(student_batch):
        out = forward(student_batch)
        for key in ("point_logits", "pixel_logits"):
            out[key].retain_grad()
        captured.update(out)
        return out

    recipe._forward = keep_logits
    losses = recipe.training_step(batch, 0)
    assert all(torch.isfinite(v) for v in losses.values())
    n0 = len(samples[0]["xyz"])
    unlabelled_images = batch["student"]["image_sample"] == 1
    seg = sum(losses[k] for k in ("ce", "lovasz", "pixel_ce", "pixel_lovasz"))
    seg.backward(retain_graph=True)
    point_grad, pixel_grad = captured["point_logits"].grad, captured["pixel_logits"].grad
    assert point_grad[:n0].abs().sum() > 0 and point_grad[n0:].abs().sum() == 0
    assert pixel_grad[~unlabelled_images].abs().sum() > 0 and pixel_grad[unlabelled_images].abs().sum() == 0
    captured["point_logits"].grad = None
    losses["kl"].backward(retain_graph=True)
    kl_grad = captured["point_logits"].grad
    covered = batch["kd_index"][n0:] >= 0
    assert covered.float().mean() > 0.95 and (kl_grad[n0:][covered].abs().sum(1) > 0).all()
    # a batch of unlabelled frames alone: zero segmentation terms, a KL and a feature term that train the student
    alone = recipe.training_step(recipe.collate([samples[1], ds[(1, second)]]), 1)
    assert all(float(alone[k].detach()) == 0 for k in ("ce", "lovasz", "pixel_ce", "pixel_lovasz"))
    assert all(float(alone[k].detach()) > 0 for k in ("kl", "feat", "imputation"))


def test_benchmark_pairs_seeds_and_gives_a_t_interval():
    from benchmarks.bench_u2mkd import interval, regime_table

    # mean 2, sample std sqrt(0.5) over 5 seeds: half-width t(0.975, 4) * sqrt(0.5) / sqrt(5) = 2.776 * 0.316 = 0.88
    assert interval([1.0, 2.0, 3.0, 2.0, 2.0]) == "+2.00 [+1.12, +2.88]"
    spec = {"rows": ["a", "b"], "pairs": [("a", "b")]}
    per_seed = [{"seed": s, "full": {"a": {"miou6": 10.0 + s, "accuracy": 50.0, "agree": 80.0},
                                     "b": {"miou6": 9.0 + 2 * s, "accuracy": 50.0, "agree": 70.0}}} for s in range(3)]
    table = regime_table(per_seed, "full", spec)
    assert "| a − b | miou6 | +1.00, +0.00, -1.00 |" in table and "| a − b | agree | +10.00, +10.00, +10.00 |" in table


def test_benchmark_tabulates_each_regime_over_the_seeds_that_finished_it(tmp_path, monkeypatch):
    import json

    import benchmarks.bench_u2mkd as bench

    monkeypatch.setattr(bench, "OUT", tmp_path)
    share = {s: dict.fromkeys(bench.CLASSES, 5.0) for s in ("synthetic_train", "synthetic_val")}

    def rows(names, base):
        return {n: {"miou6": base + i, "accuracy": 70.0, "agree": 80.0} for i, n in enumerate(names)}

    for seed in (0, 1, 3):  # the label-scarce regime of three seeds, the full one of seed 1 only
        part = {"rows": rows(bench.SCARCE["rows"], seed), "class_share": share,
                "seconds": {"teacher_scarce": {"seconds": 10.0 * (seed + 1)}},
                "labelled": {"labelled_frames": ["a", "b"], "training_frames": 16}}
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "scarce.json").write_text(json.dumps(part))
    full = {"rows": rows(bench.FULL["rows"], 20), "class_share": share, "seconds": {"teacher": {"seconds": 7.0}},
            "loss": {n: [1.0] * 10 for n in bench.FULL["rows"][1:]}}
    (tmp_path / "seed1" / "full.json").write_text(json.dumps(full))
    scarce = bench.regime_results((0, 1, 2, 3), "scarce")
    assert [r["seed"] for r in scarce] == [0, 1, 3]
    text = bench.tables(bench.regime_results((0, 1, 2, 3), "full"), scarce)
    assert "mean ± std over 3 seeds" in text and "mean ± std over 1 seeds" in text
    assert "| student_kd_scarce − student_nokd_scarce | miou6 | +1.00, +1.00, +1.00 |" in text
    assert "'teacher_scarce': 23" in text and "'teacher': 7" in text
    bench.main((0, 1, 2, 3), table_only=True)
    assert (tmp_path / "table.md").read_text().startswith("(a) label-scarce")


def test_benchmark_scores_some_rows_now_and_the_rest_later(tmp_path, monkeypatch):
    import json
    from dataclasses import asdict

    import pytest

    import benchmarks.bench_u2mkd as bench

    monkeypatch.setattr(bench, "OUT", tmp_path)
    (tmp_path / "seed0").mkdir()
    budget = asdict(bench.BENCH)
    part = {"budget": budget, "rows": {n: {"miou6": 50.0, "accuracy": 70.0, "agree": 80.0}
                                       for n in ("teacher", "student_nokd", "student_kd")}}
    (tmp_path / "seed0" / "full.json").write_text(json.dumps(part))
    # rows already scored are not trained again; another row would be (and here the lock-free path fails on
    # purpose: no world exists)
    assert bench.run_regime(0, "full", only=["student_kd"])["rows"] == part["rows"]
    monkeypatch.setattr(bench, "make_dataset", lambda *a: (_ for _ in ()).throw(RuntimeError("would train")))
    with pytest.raises(RuntimeError, match="would train"):
        bench.run_regime(0, "full", only=["camera_only"])
    assert not (tmp_path / "seed0" / ".lock_full").exists()  # a failed process leaves no lock behind
    # rows of another full-label schedule are refused for the full regime, not for the label-scarce one
    (tmp_path / "seed0" / "full.json").write_text(json.dumps({**part, "budget": {**budget, "student_steps": 400}}))
    with pytest.raises(SystemExit, match=r"full.json: its rows were trained at another budget.*student_steps"):
        bench.run_regime(0, "full", only=["student_kd"])
    assert bench.budget_changes({**budget, "student_steps": 400}, "scarce") == {}
    assert bench.budget_changes({**budget, "ablations": False, "scarce_ablations": False}, "full") == {}
    assert bench.budget_changes({**budget, "scarce_fraction": 0.5}, "scarce") == {
        "scarce_fraction": (0.5, budget["scarce_fraction"])}
    # the table shows the rows and pairs every seed has, and names the rest
    per_seed = [{"seed": s, "full": {n: {"miou6": 10.0 + s, "accuracy": 50.0, "agree": 80.0}
                                     for n in ("teacher", "student_nokd", "student_kd", "camera_only")[: 3 + s]}}
                for s in range(2)]
    table = bench.regime_table(per_seed, "full", bench.FULL)
    assert "| student_kd − student_nokd | miou6 | +0.00, +0.00 |" in table and "| camera_only |" not in table
    assert "kl_only − " not in table
    assert ("left out, not scored on every seed: student_lidar_only (no score on seeds 0, 1); camera_only (no score "
            "on seeds 0); student_kd_kl_only (no score on seeds 0, 1)") in table
    # two seeds trained at different schedules share no table
    with pytest.raises(SystemExit, match=r"seeds 0 and 1 of the full regime were trained at different budgets "
                                         r"\(student_steps\)"):
        bench.tables([{**per_seed[0], "budget": budget}, {**per_seed[1], "budget": {**budget, "student_steps": 9}}],
                     [])


def test_benchmark_rows_option_trains_only_the_regimes_that_hold_them(monkeypatch, tmp_path):
    import benchmarks.bench_u2mkd as bench

    calls = []
    monkeypatch.setattr(bench, "OUT", tmp_path)
    monkeypatch.setattr(bench, "run_regime", lambda seed, regime, jobs, only: calls.append((seed, regime, only)))
    monkeypatch.setattr(bench, "regime_results", lambda seeds, regime: [])
    import pytest

    with pytest.raises(SystemExit, match="no seed of either regime finished"):
        bench.main((3, 1), only=["student_kd"])
    assert calls == [(3, "full", ["student_kd"]), (1, "full", ["student_kd"])]


def test_benchmark_keeps_what_its_file_holds_for_earlier_rows(tmp_path, monkeypatch):
    import json
    from dataclasses import asdict

    import benchmarks.bench_u2mkd as bench

    monkeypatch.setattr(bench, "OUT", tmp_path)
    trained = []
    monkeypatch.setattr(bench, "make_dataset", lambda out, *a: out)
    monkeypatch.setattr(bench, "train_rows", lambda rows, *a, **k: trained.extend(rows))
    monkeypatch.setattr(bench, "evaluate", lambda runs, names, teacher: {n: {"miou6": 1.0} for n in names})
    monkeypatch.setattr(bench, "class_shares", lambda data: {})
    monkeypatch.setattr(bench, "loss_windows", lambda run, steps: [2.0] * 10)
    monkeypatch.setattr(bench, "labelled_frames", lambda run: {"from": run.name})
    (tmp_path / "seed0").mkdir()
    part = {"budget": asdict(bench.BENCH), "rows": {"teacher": {"miou6": 9.0}, "student_kd": {"miou6": 8.0}},
            "loss": {"student_kd": [1.0] * 10}}
    (tmp_path / "seed0" / "full.json").write_text(json.dumps(part))
    # the earlier rows' run folders are gone: their scores and loss come from the file
    result = bench.run_regime(0, "full", only=["camera_only"])
    assert trained == ["teacher", "camera_only"] and list(result["rows"]) == ["teacher", "camera_only", "student_kd"]
    assert result["rows"]["student_kd"] == {"miou6": 8.0} and result["loss"]["student_kd"] == [1.0] * 10
    assert result["loss"]["camera_only"] == [2.0] * 10 and not (tmp_path / "seed0" / ".lock_full").exists()
    scarce = {"budget": asdict(bench.BENCH), "rows": {"teacher_scarce": {}, "student_nokd_scarce": {}},
              "labelled": {"from": "earlier"}}
    (tmp_path / "seed0" / "scarce.json").write_text(json.dumps(scarce))
    assert bench.run_regime(0, "scarce", only=["student_kd_scarce"])["labelled"] == {"from": "earlier"}
    (tmp_path / "seed0" / "scarce.json").unlink()
    assert bench.run_regime(0, "scarce", only=["student_kd_scarce"])["labelled"] == {"from": "student_kd_scarce"}


def test_benchmark_runner_refuses_options_before_running_anything(monkeypatch, capsys):
    import benchmarks.__main__ as runner
    import benchmarks.bench_u2mkd as bench

    monkeypatch.setattr(bench, "main", lambda: (_ for _ in ()).throw(AssertionError("ran")))
    assert runner.main(["u2mkd", "--rows", "student_kd"]) == 2
    assert "python -m benchmarks.bench_u2mkd --rows student_kd" in capsys.readouterr().err
    assert runner.main(["u2mkd", "nosuch"]) == 2 and "unknown benchmark 'nosuch'" in capsys.readouterr().err


def test_benchmark_student_steps_option_trains_the_full_label_students_longer(tmp_path, monkeypatch):
    import json
    from dataclasses import asdict

    import pytest

    import benchmarks.bench_u2mkd as bench

    monkeypatch.setattr(bench, "BENCH", bench.BENCH)  # restored after the test
    monkeypatch.setattr(bench, "OUT", tmp_path)
    trained, windows = {}, []
    monkeypatch.setattr(bench, "make_dataset", lambda out, *a: out)
    monkeypatch.setattr(bench, "train_rows", lambda rows, *a, **k: trained.update(rows))
    monkeypatch.setattr(bench, "evaluate", lambda runs, names, teacher: {n: {"miou6": 1.0} for n in names})
    monkeypatch.setattr(bench, "class_shares", lambda data: {})
    monkeypatch.setattr(bench, "loss_windows", lambda run, steps: windows.append(steps) or [2.0] * 10)
    default = bench.BUDGETS["bench"].student_steps
    bench.use_student_steps(2 * default)
    result = bench.run_regime(0, "full", only=["student_kd"])
    assert f"train.max_iters={2 * default}" in trained["student_kd"][1]
    assert f"train.max_iters={bench.BUDGETS['bench'].teacher_steps}" in trained["teacher"][1]  # the teacher as before
    assert windows == [2 * default] and result["budget"]["student_steps"] == 2 * default
    # the folder now holds the longer schedule: the default one is refused there, and the table names the schedule
    bench.use_student_steps(None)
    with pytest.raises(SystemExit, match=r"trained at another budget.*student_steps"):
        bench.run_regime(0, "full", only=["student_nokd"])
    part = json.loads((tmp_path / "seed0" / "full.json").read_text())
    assert part["budget"] == json.loads(json.dumps({**asdict(bench.BUDGETS["bench"]), "student_steps": 2 * default}))
    with pytest.raises(ValueError, match="at least 10"):
        bench.use_student_steps(5)
