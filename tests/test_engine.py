"""The training engine: schedules, EMA, checkpoints, sampler, and end-to-end runs of `xmkd train` (resume after
kill -9, Ctrl-C, NaN guard, DDP under torchrun, `xmkd eval --all`)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_nuscenes
from omegaconf import OmegaConf

from xmkd.config import ScheduleConfig
from xmkd.engine import checkpoint, environment
from xmkd.engine.data import ResumableSampler
from xmkd.engine.ema import EMA
from xmkd.engine.schedules import lr_factor, momentum_at, set_momentum
from xmkd.errors import XmkdConfigError, XmkdError
from xmkd.models import weights

REPO = Path(__file__).resolve().parents[1]


def schedule(**kw):
    return OmegaConf.structured(ScheduleConfig(**kw))


def test_schedules():
    f = lr_factor(schedule(name="cosine", warmup_iters=10, warmup_start_ratio=0.0), 110)
    assert f(0) == 0.0 and math.isclose(f(5), 0.5) and math.isclose(f(10), 1.0)
    assert math.isclose(f(60), 0.5, abs_tol=1e-9) and math.isclose(f(110), 0.0, abs_tol=1e-12)
    f = lr_factor(schedule(name="multistep", milestones=[3, 6], gamma=0.1), 10)
    assert [round(f(s), 6) for s in (0, 3, 5, 6, 9)] == [1.0, 0.1, 0.1, 0.01, 0.01]
    f = lr_factor(schedule(name="onecycle", pct_start=0.5, warmup_start_ratio=0.1), 10)
    assert math.isclose(f(0), 0.1) and math.isclose(f(5), 1.0) and f(9) < 0.1 and math.isclose(f(10), 1e-4)
    # OpenPCDet's OneCycle (the SECOND teacher's adam_onecycle): cosine from lr to lr / DIV_FACTOR / 1e4
    f = lr_factor(schedule(name="onecycle", pct_start=0.4, warmup_start_ratio=0.1, final_ratio=1e-5), 100)
    for s in range(40, 101):
        p = (s - 40) / 60
        assert math.isclose(f(s), 1e-5 + (1 - 1e-5) / 2 * (math.cos(math.pi * p) + 1), rel_tol=1e-9), s
    assert math.isclose(f(100), 1e-5)
    with pytest.raises(XmkdConfigError, match="final_ratio"):
        lr_factor(schedule(name="onecycle", final_ratio=1.5), 5)
    assert lr_factor(schedule(name="constant"), 5)(3) == 1.0
    with pytest.raises(XmkdConfigError, match="unknown schedule"):
        lr_factor(schedule(name="linear"), 5)


def test_onecycle_momentum_follows_torchs_one_cycle():
    import torch

    # the HSRDN / CMKD students' OneCycleLR: BASE_MOM 0.85, MAX_MOM 0.95, PCT_START 0.4, START_RATE 10
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1.0, betas=(0.9, 0.999))
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=101, pct_start=0.4, base_momentum=0.85,
                                              max_momentum=0.95, div_factor=10, final_div_factor=1000)
    m = momentum_at(schedule(name="onecycle", pct_start=0.4, momentum=[0.95, 0.85]), 100)
    f = lr_factor(schedule(name="onecycle", pct_start=0.4, warmup_start_ratio=0.1), 100)  # final_ratio 1e-4
    for s in range(100):
        assert math.isclose(opt.param_groups[0]["betas"][0], m(s), abs_tol=2e-3), s
        assert math.isclose(opt.param_groups[0]["lr"], f(s), abs_tol=2e-2), s
        assert opt.param_groups[0]["betas"][1] == 0.999
        opt.step()
        ref.step()
    assert m(0) == 0.95 and math.isclose(m(40), 0.85) and math.isclose(m(100), 0.95)
    assert math.isclose(opt.param_groups[0]["lr"], f(100)) and math.isclose(f(100), 1e-4)  # lr / 10 / 1000
    sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0, momentum=0.9)
    set_momentum(sgd, 0.8)
    assert sgd.param_groups[0]["momentum"] == 0.8
    assert momentum_at(schedule(name="onecycle"), 10) is None  # [] = the optimizer's fixed value
    with pytest.raises(XmkdConfigError, match="train.schedule.momentum"):
        momentum_at(schedule(name="cosine", momentum=[0.95, 0.85]), 10)


def test_ema_update_formula():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.9)
    expected = 1.0
    for step, value in enumerate([2.0, 4.0, 8.0, 16.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        alpha = min(1 - 1 / (step + 1), 0.9)
        assert math.isclose(ema.alpha(), alpha)
        ema.update(model)
        expected = alpha * expected + (1 - alpha) * value
        assert torch.allclose(ema.module.weight, torch.full((1, 2), expected))
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_load_weights_lists_mismatched_keys(tmp_path):
    a = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    b = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2), torch.nn.ReLU())
    checkpoint.save(tmp_path / "a.pt", {"models": {"net": a.state_dict()}})
    with pytest.raises(XmkdError) as err:
        weights.load_module_from_file(b, tmp_path / "a.pt", key="net")
    msg = str(err.value)
    assert "a.pt" in msg and "0.weight: checkpoint (4, 3) vs model (5, 3)" in msg and "1.weight" in msg
    c = torch.nn.Sequential(torch.nn.Linear(3, 4))
    with pytest.raises(XmkdError, match="not in model: 1.bias, 1.weight"):
        checkpoint.load_weights(c, a.state_dict(), "a.pt")
    with pytest.raises(XmkdError, match="not a readable checkpoint"):
        (tmp_path / "bad.pt").write_bytes(b"garbage")
        checkpoint.load(tmp_path / "bad.pt")


def test_sampler_shards_and_resumes():
    single = [i for _, i in ResumableSampler(20, seed=3, world=1)]
    shards = [[i for _, i in ResumableSampler(20, seed=3, rank=r, world=2)] for r in range(2)]
    assert sorted(single) == list(range(20)) and sorted(shards[0] + shards[1]) == list(range(20))
    # batch t of 2 ranks x 2 samples == batch t of 1 process x 4 samples
    for t in range(5):
        assert set(single[4 * t: 4 * t + 4]) == set(shards[0][2 * t: 2 * t + 2] + shards[1][2 * t: 2 * t + 2])
    s = ResumableSampler(20, seed=3)
    s.set_position(epoch=0, start=8)
    assert [i for _, i in s] == single[8:] and len(s) == 12
    s.set_position(epoch=1)
    assert [i for _, i in s] != single
    # Streaming across epochs: whole batches per epoch (20 // 3 = 6 batches = 18 samples), then the next epoch.
    s = ResumableSampler(20, seed=3, batch_size=3)
    s.set_position(epoch=0, start=15, limit=9)
    stream = list(s)
    assert len(stream) == 9 and [e for e, _ in stream] == [0, 0, 0] + [1] * 6
    assert [i for _, i in stream[:3]] == single[15:18]


# -- end-to-end runs --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_nuscenes(tmp_path_factory.mktemp("engine") / "nus", frames=8, frames_per_scene=2)


def train_cmd(dataset, out, *overrides, launcher=None):
    base = [sys.executable, "-m", "xmkd", "train", str(REPO / "configs" / "point_mlp" / "synthetic.yaml"),
            f"data.root={dataset}", f"output_dir={out}", "data.num_workers=0", "train.log_every=1",
            "model.max_points=4000", *overrides, "--quiet"]
    return (launcher + base[3:]) if launcher else base


def run(cmd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600, **kw)


def final_weights(out, name="point_mlp_synthetic"):
    return checkpoint.load(Path(out) / name / "checkpoints" / "last.pt")["models"]["net"]


def test_resume_after_kill_matches_uninterrupted_run(dataset, tmp_path):
    common = ["train.max_iters=60", "train.ckpt_every=5", "train.val_every=30", "model.hidden=[256,256,256]",
              "model.dropout=0.3"]  # dropout: the resumed run must continue the random draws exactly
    ref = run(train_cmd(dataset, tmp_path / "a", *common))
    assert ref.returncode == 0, ref.stderr
    cmd = train_cmd(dataset, tmp_path / "b", *common)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = tmp_path / "b" / "point_mlp_synthetic" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and checkpoint.load(last)["step"] >= 15:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.load(last)["step"]
    assert killed_at < 60, "the run finished before it could be killed"
    resumed = run(cmd + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    val = [json.loads(x) for x in (tmp_path / "a" / "point_mlp_synthetic" / "metrics.jsonl").read_text().splitlines()]
    val_b = [json.loads(x) for x in (tmp_path / "b" / "point_mlp_synthetic" / "metrics.jsonl").read_text().splitlines()]
    last_a = [r for r in val if r["kind"] == "val"][-1]
    last_b = [r for r in val_b if r["kind"] == "val"][-1]
    assert last_a["miou"] == last_b["miou"] and last_a["step"] == last_b["step"] == 60
    # A second start without --resume refuses to overwrite the run.
    again = run(cmd)
    assert again.returncode == 1 and "--resume" in again.stderr


def test_ctrl_c_inside_an_iteration_checkpoints_after_it_and_the_resumed_run_matches(dataset, tmp_path, monkeypatch,
                                                                                    request):
    """A Ctrl-C that arrives inside an iteration (here: right after its optimizer update) lets it finish and
    checkpoints it; the resumed run ends with the uninterrupted run's weights. (Checkpointing at the interrupt
    instead saved the updated weights under the previous iteration number, and the resumed run repeated it.)"""
    from xmkd.config import load_config
    from xmkd.engine.trainer import Trainer
    from xmkd.recipes import get_recipe

    # a shell's background job starts with SIGINT ignored, and the Trainer then leaves Ctrl-C alone: give this
    # process Python's own handler, as an interactive one has
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    recipe = get_recipe("point_mlp")

    def cfg(out):
        return load_config(REPO / "configs" / "point_mlp" / "synthetic.yaml", [
            f"data.root={dataset}", f"output_dir={out}", "data.num_workers=0", "model.max_points=4000",
            "train.max_iters=8", "train.ckpt_every=1000", "train.val_every=1000", "model.dropout=0.3"],
            schema=recipe.schema)

    Trainer(cfg(tmp_path / "a"), recipe, progress=False).fit()
    trainer = Trainer(cfg(tmp_path / "b"), recipe, progress=False)
    update = trainer._train_step

    def update_then_ctrl_c(batch):
        losses = update(batch)
        if trainer.step == 2:  # inside iteration 3
            os.kill(os.getpid(), signal.SIGINT)
        return losses

    monkeypatch.setattr(trainer, "_train_step", update_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the trainer's handler is gone again
    assert checkpoint.load(tmp_path / "b" / "point_mlp_synthetic" / "checkpoints" / "last.pt")["step"] == 3
    Trainer(cfg(tmp_path / "b"), recipe, resume=True, progress=False).fit()
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a), "the run resumed after Ctrl-C differs from the uninterrupted one"
    # each start recorded its machine: the fresh one at iteration 0, the resumed one where it went on; resuming the
    # finished run trains nothing and adds no record
    Trainer(cfg(tmp_path / "b"), recipe, resume=True, progress=False).fit()
    starts = environment.read(tmp_path / "b" / "point_mlp_synthetic")
    assert [e["step"] for e in starts] == [0, 3]
    assert all(e["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and e["world_size"] == 1
               and e["torch"] == torch.__version__ and e["device"] == "cpu" for e in starts)


def test_ctrl_c_writes_a_checkpoint(dataset, tmp_path):
    cmd = train_cmd(dataset, tmp_path, "train.max_iters=100000", "train.ckpt_every=100000", "train.val_every=100000")
    # a suite started in the background (`cmd &`) inherits an ignored SIGINT, and Python then never turns it into
    # KeyboardInterrupt: give the run the default disposition, as an interactive shell would
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics = tmp_path / "point_mlp_synthetic" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    state = checkpoint.load(tmp_path / "point_mlp_synthetic" / "checkpoints" / "last.pt")
    assert state["step"] >= 3 and "interrupted at iteration" in out


def test_diverging_run_stops_with_the_loss_name(dataset, tmp_path):
    res = run(train_cmd(dataset, tmp_path, "train.max_iters=50", "train.ckpt_every=1", "train.val_every=1000",
                        "train.optimizer.name=sgd", "train.optimizer.lr=1e12", "train.schedule.name=constant"))
    assert res.returncode == 1
    assert "loss term 'ce' is" in res.stderr and "at iteration" in res.stderr and "untouched" in res.stderr
    state = checkpoint.load(tmp_path / "point_mlp_synthetic" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["models"]["net"].values())


def test_ddp_two_processes_match_one_process(dataset, tmp_path):
    common = ["train.max_iters=6", "train.val_every=6", "train.ckpt_every=6", "train.optimizer.name=sgd",
              "train.optimizer.lr=0.1", "train.schedule.name=constant"]
    single = run(train_cmd(dataset, tmp_path / "one", "data.batch_size=4", *common))
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m",
                "xmkd"]
    ddp = run(train_cmd(dataset, tmp_path / "two", "data.batch_size=2", *common, launcher=launcher))
    assert ddp.returncode == 0, ddp.stderr

    def losses(out):
        rows = [json.loads(x) for x in (out / "point_mlp_synthetic" / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["kind"] == "train"]

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 6
    assert all(math.isclose(a, b, rel_tol=2e-3) for a, b in zip(one, two)), (one, two)
    assert one[-1] < one[0]
    # rank 0 alone records the start, with both processes counted
    assert [e["world_size"] for e in environment.read(tmp_path / "two" / "point_mlp_synthetic")] == [2]


def test_eval_every_checkpoint_with_curve(dataset, tmp_path, capsys):
    from xmkd.cli import main

    res = run(train_cmd(dataset, tmp_path, "train.max_iters=6", "train.ckpt_every=2", "train.val_every=6",
                        "train.keep_snapshots=true"))
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "point_mlp_synthetic"
    assert main(["eval", str(run_dir), "--all", "--json", str(tmp_path / "all.json"), "--quiet"]) == 0
    results = json.loads((tmp_path / "all.json").read_text())
    assert sorted(r["step"] for r in results.values()) == [2, 4, 6]
    assert (run_dir / "eval_curve.png").is_file() and "miou" in capsys.readouterr().out
    assert main(["eval", str(run_dir), "--json", str(tmp_path / "best.json"), "--quiet"]) == 0
    best = json.loads((tmp_path / "best.json").read_text())
    assert list(best) == ["best.pt"]
    # the metrics of the step-6 snapshot equal those logged at the end of training
    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert math.isclose(results["step_0000006.pt"]["miou"], [r for r in logged if r["kind"] == "val"][-1]["miou"])
    assert (run_dir / "config.yaml").is_file() and any((run_dir / "tensorboard").iterdir())


class TwoOptimizerRecipe:
    """A recipe with two trainable modules on separate optimizers, a frozen teacher and an EMA: the engine's
    generic paths that the shipped single-optimizer recipes do not exercise."""

    name = "two_opt"

    def __init__(self, cfg, device):
        from xmkd.engine.ema import EMA

        self.cfg, self.device = cfg, device
        torch.manual_seed(0)
        self.nets = {"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 1), "teacher": torch.nn.Sequential(
            torch.nn.Linear(3, 1), torch.nn.Dropout(0.5))}
        self._ema = {"a": EMA(self.nets["a"], 0.9)}
        self.teacher_modes = []

    def build(self):
        pass

    def frozen(self):
        return {"teacher"}

    def param_groups(self):
        return {"first": [{"params": self.nets["a"].parameters()}], "second": [{"params": self.nets["b"].parameters()}]}

    def emas(self):
        return self._ema

    def train_dataset(self):
        g = torch.Generator().manual_seed(1)
        return [(torch.randn(3, generator=g), torch.randn(1, generator=g)) for _ in range(16)]

    def val_dataset(self):
        return self.train_dataset()[:4]

    def collate(self, samples):
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])

    def training_step(self, batch, step):
        x, y = batch
        self.teacher_modes.append(self.nets["teacher"].training)
        with torch.no_grad():
            target = self.nets["teacher"](x)
        pred = self.nets["b"](torch.relu(self.nets["a"](x)))
        return {"mse": ((pred - y) ** 2).mean(), "distill": ((pred - target) ** 2).mean() * 0.1}

    def validate(self, batches):
        errs = [((self.nets["b"](torch.relu(self.nets["a"](x))) - y) ** 2).mean() for x, y in batches]
        return {"mse": float(torch.stack(errs).mean())}

    def visualize(self, batch):
        return {}


class _ListDataset(list):
    def __getitem__(self, key):
        return super().__getitem__(key[1] if isinstance(key, tuple) else key)


def test_two_optimizers_clipping_frozen_teacher_and_ema(tmp_path):
    from xmkd.config import ExperimentConfig, load_config
    from xmkd.engine.trainer import Trainer

    class Recipe(TwoOptimizerRecipe):
        def train_dataset(self):
            return _ListDataset(super().train_dataset())

        def val_dataset(self):
            return _ListDataset(super().val_dataset())

    cfg = load_config(None, [f"output_dir={tmp_path}", "name=two", "data.batch_size=4", "data.num_workers=0",
                             "train.max_iters=8", "train.val_every=4", "train.ckpt_every=4", "train.grad_clip=0.01",
                             "train.optimizer.name=sgd", "train.optimizer.lr=0.5", "train.best_metric=mse",
                             "train.best_mode=min"], schema=ExperimentConfig)
    trainer = Trainer(cfg, Recipe, progress=False)
    teacher_before = {k: v.clone() for k, v in trainer.recipe.nets["teacher"].state_dict().items()}
    a_before = trainer.recipe.nets["a"].weight.detach().clone()
    trainer.fit()
    recipe = trainer.recipe
    assert set(trainer.optimizers) == {"first", "second"}
    assert not any(recipe.teacher_modes)  # the teacher stayed in eval mode at every step
    assert all(torch.equal(v, recipe.nets["teacher"].state_dict()[k]) for k, v in teacher_before.items())
    # clipping: 8 SGD steps of lr 0.5 with gradient norm <= 0.01 move the weights by at most 8 * 0.5 * 0.01
    assert (recipe.nets["a"].weight.detach() - a_before).norm() <= 8 * 0.5 * 0.01 + 1e-6
    state = checkpoint.load(tmp_path / "two" / "checkpoints" / "last.pt")
    assert set(state["optimizers"]) == {"first", "second"} and state["emas"]["a"]["step"] == 8
    assert (tmp_path / "two" / "checkpoints" / "best.pt").exists() and state["best"]["metric"] == "mse"


def test_a_run_that_fails_at_its_first_iteration_leaves_nothing_but_a_checkpointed_run_is_kept(tmp_path):
    from xmkd.config import ExperimentConfig, load_config
    from xmkd.engine.trainer import Trainer

    class Failing(TwoOptimizerRecipe):
        fail = True

        def train_dataset(self):
            return _ListDataset(super().train_dataset())

        def val_dataset(self):
            return _ListDataset(super().val_dataset())

        def training_step(self, batch, step):
            if Failing.fail:
                raise XmkdError("bad sample")
            return super().training_step(batch, step)

    def config(iters):
        return load_config(None, [f"output_dir={tmp_path}", "name=f", "data.batch_size=4", "data.num_workers=0",
                                  f"train.max_iters={iters}", "train.val_every=2", "train.ckpt_every=2"],
                           schema=ExperimentConfig)

    with pytest.raises(XmkdError, match="bad sample"):
        Trainer(config(4), Failing, progress=False).fit()
    assert not (tmp_path / "f").exists()
    Failing.fail = False
    Trainer(config(4), Failing, progress=False).fit()
    Failing.fail = True  # resumed for more iterations, the first of which fails: the run stays
    with pytest.raises(XmkdError, match="bad sample"):
        Trainer(config(6), Failing, resume=True, progress=False).fit()
    assert (tmp_path / "f" / "checkpoints" / "last.pt").exists() and (tmp_path / "f" / "config.yaml").exists()
    # ... and so does its record: a resumed run writes config.yaml with its first checkpoint, not at its start
    saved = OmegaConf.load(tmp_path / "f" / "config.yaml")
    assert saved.train.max_iters == 4 and checkpoint.load(tmp_path / "f" / "checkpoints" / "last.pt")["step"] == 4
    Failing.fail = False
    Trainer(config(6), Failing, resume=True, progress=False).fit()
    assert OmegaConf.load(tmp_path / "f" / "config.yaml").train.max_iters == 6


def test_a_finished_run_with_a_damaged_last_checkpoint_is_not_reused(tmp_path):
    from xmkd.errors import XmkdError
    from xmkd.runs.train import train_or_reuse

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "val", "step": 3, "miou": 0.5}) + "\n")
    (run / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 cut short")
    args = ("lidar_seg/synthetic.yaml", ["train.max_iters=3", f"output_dir={tmp_path}", "name=run"], run)
    with pytest.raises(XmkdError, match=r"last.pt: the finished run's last checkpoint is damaged"):
        train_or_reuse(*args)
    from xmkd.config import load_config, save_config, to_yaml
    from xmkd.recipes import get_recipe

    stored = to_yaml(load_config(args[0], args[1], schema=get_recipe("lidar_seg").schema))  # no config.yaml: the
    torch.save({"step": 3, "w": torch.arange(4096.0), "config": stored}, run / "checkpoints" / "last.pt")  # stored
    whole = (run / "checkpoints" / "last.pt").read_bytes()
    damaged = bytearray(whole)
    damaged[whole.index(torch.arange(4096.0).numpy().tobytes()) + 8000] ^= 0xFF  # inside the tensor's record
    (run / "checkpoints" / "last.pt").write_bytes(bytes(damaged))
    with pytest.raises(XmkdError, match=r"last.pt: the finished run's last checkpoint is damaged"):
        train_or_reuse(*args)
    # a byte of the zip directory damaged: zipfile raises many kinds of error; each is 'damaged', naming the file
    directory = whole.rindex(b"PK\x01\x02")
    for at, bit in ((directory + 51, 0x80), (directory + 10, 1), (directory + 8, 1), (26, 0x80)):
        damaged = bytearray(whole)
        damaged[at] ^= bit
        (run / "checkpoints" / "last.pt").write_bytes(bytes(damaged))
        with pytest.raises(XmkdError, match=r"last.pt: the finished run's last checkpoint is damaged"):
            train_or_reuse(*args)
    (run / "checkpoints" / "last.pt").write_bytes(whole)
    assert train_or_reuse(*args) == {"miou": 0.5}
    # a run of another length is neither reused nor stretched
    save_config(load_config(args[0], args[1], schema=get_recipe("lidar_seg").schema), run)
    with pytest.raises(XmkdError, match=r"train.max_iters: saved 3, requested 5 \(an annealed schedule cannot be "
                                        r"stretched\)"):
        train_or_reuse(args[0], [*args[1][1:], "train.max_iters=5"], run)


def test_a_run_saved_without_amp_resumes_with_it(tmp_path, monkeypatch):
    # train.amp acts on CUDA only: a CPU run with it on saved a disabled scaler's empty state; resumed where AMP is
    # on (a GPU; here a CPU scaler stands in for the CUDA one), the scaler starts fresh instead of failing to load it
    from xmkd.config import ExperimentConfig, load_config
    from xmkd.engine import trainer as trainer_module
    from xmkd.engine.trainer import Trainer

    class Recipe(TwoOptimizerRecipe):
        def train_dataset(self):
            return _ListDataset(super().train_dataset())

        def val_dataset(self):
            return _ListDataset(super().val_dataset())

    def config(iters):
        return load_config(None, [f"output_dir={tmp_path}", "name=amp", "data.batch_size=4", "data.num_workers=0",
                                  f"train.max_iters={iters}", "train.amp=true"], schema=ExperimentConfig)

    Trainer(config(2), Recipe, progress=False).fit()
    assert checkpoint.load(tmp_path / "amp" / "checkpoints" / "last.pt")["scaler"] == {}  # CPU: AMP off
    scaler = torch.amp.GradScaler
    monkeypatch.setattr(trainer_module.torch.amp, "GradScaler", lambda device, enabled: scaler("cpu", enabled=True))
    resumed = Trainer(config(3), Recipe, resume=True, progress=False)
    assert resumed.step == 2 and resumed.scaler.is_enabled() and resumed.scaler.get_scale() == 2.0 ** 16
