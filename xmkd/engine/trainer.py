"""The training loop shared by every recipe.

One step: load a batch -> recipe.training_step -> check every loss term is finite -> backward (AMP on CUDA)
-> clip -> step every optimizer and its schedule -> update EMAs. Around it: periodic validation, `last`
and `best` checkpoints written atomically, resume that restores everything (models, optimizers, schedules,
scaler, EMAs, RNG states, data position), Ctrl-C that checkpoints before exiting, and DDP under torchrun.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from xmkd import __version__
from xmkd.config import save_config, to_yaml
from xmkd.engine import checkpoint, distributed, environment
from xmkd.engine.data import EvalSampler, ResumableSampler, make_loader, to_device
from xmkd.engine.logging import RunLogger, summary_table
from xmkd.engine.recipe import Recipe, freeze_teachers
from xmkd.engine.schedules import lr_factor, momentum_at, set_momentum
from xmkd.errors import XmkdConfigError, XmkdError
from xmkd.io import check_output


class NonFiniteLossError(XmkdError):
    """A loss term became NaN or Inf; the run stops and the last good checkpoint stays as it is."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(cfg, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    o = cfg.train.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    raise XmkdConfigError(f"train.optimizer.name: unknown optimizer {o.name!r} (sgd, adam, adamw)")


class Trainer:
    def __init__(self, cfg, recipe_cls: type[Recipe], resume: bool = False, progress: bool = True,
                 bar_position: int | None = None):
        self.cfg = cfg
        self.bar_position = bar_position  # tqdm line of this run when several train side by side (`xmkd demo`)
        self.device = distributed.init(cfg.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        self.progress = progress and self.main
        self.run_dir = Path(cfg.output_dir) / cfg.name
        self.ckpt_dir = self.run_dir / "checkpoints"
        # Everything that can fail on the config (recipe, teacher checkpoints, data) is built before the run directory
        # is created, so a start that fails leaves nothing behind; `fit` removes a directory it created when the
        # first iteration fails (never one that holds a checkpoint).
        self.created_run_dir = not self.run_dir.exists()
        if self.main:
            if (self.ckpt_dir / "last.pt").exists() and not resume:
                raise XmkdError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose "
                                "another name (name=...)")
            check_output(self.run_dir, folder=True, what="the run (output_dir/name)")
        seed_everything(cfg.seed)
        self.recipe = recipe_cls(cfg, self.device)
        self.recipe.build()
        freeze_teachers(self.recipe)
        frozen = self.recipe.frozen()
        for name, net in self.recipe.nets.items():
            if name in frozen or not any(p.requires_grad for p in net.parameters()):
                continue
            if cfg.train.sync_bn and self.world > 1:
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
                self.recipe.nets[name] = net
            if self.world > 1:
                self.recipe.nets[name] = nn.parallel.DistributedDataParallel(
                    net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    find_unused_parameters=True)
        self.optimizers = {k: make_optimizer(cfg, g) for k, g in self.recipe.param_groups().items()}
        self.emas = self.recipe.emas()

        self.train_set = self.recipe.train_dataset()
        self.val_set = self.recipe.val_dataset()  # a missing or unlabelled split fails here, before the run directory
        bs = cfg.data.batch_size
        self.sampler = ResumableSampler(len(self.train_set), cfg.seed, True, self.rank, self.world, bs)
        self.steps_per_epoch = self.sampler.per_rank() // bs
        if self.steps_per_epoch == 0:
            raise XmkdConfigError(f"data.batch_size {bs} x {self.world} process(es) is larger than the "
                                  f"{len(self.train_set)} training samples")
        self.iteration_based = cfg.train.max_iters > 0
        self.total_steps = cfg.train.max_iters if self.iteration_based else cfg.train.epochs * self.steps_per_epoch
        factor = lr_factor(cfg.train.schedule, self.total_steps, self.world)
        self.schedules = {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in self.optimizers.items()}
        self.momentum = momentum_at(cfg.train.schedule, self.total_steps)  # None: the optimizer's own, fixed
        if self.momentum:
            for o in self.optimizers.values():
                set_momentum(o, self.momentum(0))
        self.amp = bool(cfg.train.amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0
        self.best: dict[str, Any] = {"value": None, "step": None}
        self.data_wait = 0.0
        self.step_time = 0.0
        # a fresh run records its config at once; a resumed one with its first checkpoint (`save`), so that a
        # resumed start that fails leaves the record of the run's checkpoints as it was
        self.config_pending = resume
        if resume:
            self._resume()
        if self.main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            if not self.config_pending:
                save_config(cfg, self.run_dir)
        distributed.barrier()
        self.logger = RunLogger(self.run_dir, enabled=self.main)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "xmkd_version": __version__, "config": to_yaml(self.cfg), "step": self.step,
            "models": {k: checkpoint.unwrap(m).state_dict() for k, m in self.recipe.nets.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedules": {k: s.state_dict() for k, s in self.schedules.items()},
            "scaler": self.scaler.state_dict(), "emas": {k: e.state_dict() for k, e in self.emas.items()},
            "rng": rng_state(), "best": dict(self.best),
        }

    def save(self, best: bool = False) -> None:
        if not self.main:
            return
        state = self.state()
        checkpoint.save(self.ckpt_dir / "last.pt", state)
        if self.config_pending:  # the first checkpoint of a resumed run: from now on it is this config's run
            save_config(self.cfg, self.run_dir)
            self.config_pending = False
        if self.cfg.train.keep_snapshots:
            shutil.copyfile(self.ckpt_dir / "last.pt", self.ckpt_dir / f"step_{self.step:07d}.pt")
        if best:
            shutil.copyfile(self.ckpt_dir / "last.pt", self.ckpt_dir / "best.pt")

    def _resume(self) -> None:
        path = self.ckpt_dir / "last.pt"
        state = checkpoint.load(path, map_location=self.device)
        for k, m in self.recipe.nets.items():
            checkpoint.load_weights(m, state["models"][k], f"{path} [{k}]")
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedules.items():
            s.load_state_dict(state["schedules"][k])
        if state["scaler"] or not self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])  # (a disabled scaler ignores a saved one)
        # else: saved without AMP (train.amp off, or on but the run was on a CPU, where AMP is off): a fresh scaler
        for k, e in self.emas.items():
            e.load_state_dict(state["emas"][k])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = state["best"]

    # -- the loop --------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        cfg = self.cfg
        bs = cfg.data.batch_size
        last_metrics: dict[str, float] = {}
        start_step = self.step
        bar = tqdm(total=self.total_steps, initial=self.step, desc=cfg.name, unit="it", disable=not self.progress,
                   dynamic_ncols=True, position=self.bar_position)
        interrupt = _StopAtStepBoundary()
        at_boundary = True  # the state in memory is the one after a whole iteration (safe to checkpoint)
        try:
            epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_position(epoch, in_epoch * bs, limit=(self.total_steps - self.step) * bs)
            # one loader (and one set of workers) for the rest of the run; the sampler streams the epochs
            loader = make_loader(self.train_set, self.sampler, bs, self.recipe.collate, cfg.data.num_workers,
                                 self.device.type == "cuda", drop_last=True)
            for name, net in self.recipe.nets.items():
                net.train(name not in self.recipe.frozen())
            if self.step:  # resumed: the generators already hold the state after the run's first iterator drew
                # the loader's base seed from them; drawing it again would shift every later random draw (dropout)
                with torch.random.fork_rng(devices=[]):
                    it = iter(loader)
            else:
                it = iter(loader)
            while self.step < self.total_steps:
                interrupt.check()
                t0 = time.perf_counter()
                batch = next(it)
                at_boundary = False
                t1 = time.perf_counter()
                losses = self._train_step(to_device(batch, self.device))
                t2 = time.perf_counter()
                self.step += 1
                if self.main and self.step == start_step + 1:  # a start that trains nothing leaves no record
                    environment.record(self.run_dir, start_step, self.device, self.world)
                self.data_wait += t1 - t0
                self.step_time += t2 - t0
                bar.update(1)
                if self.step % cfg.train.log_every == 0 or self.step == self.total_steps:
                    self._log_train(losses, bar)
                end_of_epoch = self.step % self.steps_per_epoch == 0
                unit_done = self.step if self.iteration_based else self.step // self.steps_per_epoch
                boundary = self.iteration_based or end_of_epoch
                final = self.step == self.total_steps
                is_best = False
                if boundary and (final or unit_done % cfg.train.val_every == 0):
                    last_metrics = self.validate()
                    is_best = self._is_best(last_metrics)
                if boundary and (final or unit_done % cfg.train.ckpt_every == 0 or is_best):
                    self.save(best=is_best)
                at_boundary = True
            interrupt.check()
        except KeyboardInterrupt:
            self._interrupted(at_boundary)
            raise
        except Exception:
            if interrupt.requested:  # Ctrl-C also ended the data workers while this process waited for a batch
                self._interrupted(at_boundary)
                raise KeyboardInterrupt from None
            if self.step == start_step:
                self._remove_failed_start()
            raise
        finally:
            interrupt.restore()
            bar.close()
        if self.main:
            self._summary(last_metrics)
        self.logger.close()
        return last_metrics

    def _interrupted(self, at_boundary: bool) -> None:
        if at_boundary:
            self.save()
        if self.main and at_boundary and self.step == self.total_steps:
            print(f"\ninterrupted after the last iteration ({self.step}): the run is complete, checkpoint "
                  f"{self.ckpt_dir / 'last.pt'}", flush=True)
        elif self.main:
            saved = (f"checkpoint {self.ckpt_dir / 'last.pt'}" if at_boundary else
                     f"stopped inside an iteration (a second Ctrl-C): the last checkpoint in {self.ckpt_dir} holds an "
                     "earlier iteration")
            print(f"\ninterrupted at iteration {self.step}: {saved}; continue with `xmkd train ... --resume` (or "
                  "re-run the `xmkd demo` / benchmark command that started it)", flush=True)

    def _remove_failed_start(self) -> None:
        """After a failure before the first iteration of a run this start created: remove the run directory
        (config.yaml, an empty log), unless it holds a checkpoint."""
        self.logger.close()
        if self.main and self.created_run_dir and not any(self.ckpt_dir.glob("*.pt")):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _train_step(self, batch: Any) -> dict[str, float]:
        cfg = self.cfg
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            losses = self.recipe.training_step(batch, self.step)
        if not losses:
            raise XmkdError(f"recipe {self.recipe.name} returned no loss at iteration {self.step}")
        values = {k: v.detach() for k, v in losses.items()}
        for k, v in values.items():
            if not torch.isfinite(v).all():
                last = self.ckpt_dir / "last.pt"
                kept = f"the last good checkpoint {last} is untouched" if last.exists() else "no checkpoint was written"
                raise NonFiniteLossError(f"loss term '{k}' is {v.item()} at iteration {self.step + 1}; stopping "
                                         f"({kept})")
        total = sum(losses.values())
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if cfg.train.grad_clip > 0:
            for o in self.optimizers.values():
                self.scaler.unscale_(o)
            params = [p for o in self.optimizers.values() for g in o.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        for o in self.optimizers.values():
            self.scaler.step(o)
        self.scaler.update()
        for s in self.schedules.values():
            s.step()
            if self.momentum:
                set_momentum(s.optimizer, self.momentum(s.last_epoch))
        for name, ema in self.emas.items():
            ema.update(checkpoint.unwrap(self.recipe.nets[name]))
        out = {k: float(v) for k, v in values.items()}
        out["loss"] = float(total.detach())
        return out

    def _log_train(self, losses: dict[str, float], bar: tqdm) -> None:
        losses = distributed.all_reduce_mean(losses)
        lrs = {f"lr_{k}": o.param_groups[0]["lr"] for k, o in self.optimizers.items()}
        wait = self.data_wait / max(self.step_time, 1e-9)
        self.logger.log(self.step, "train", {**losses, **lrs, "data_wait_share": wait})
        bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})

    def validate(self) -> dict[str, float]:
        val_set = self.val_set
        loader = make_loader(val_set, EvalSampler(len(val_set), self.rank, self.world), self.cfg.data.batch_size,
                             self.recipe.collate, self.cfg.data.num_workers, self.device.type == "cuda", False)
        modes = {k: m.training for k, m in self.recipe.nets.items()}
        for m in self.recipe.nets.values():
            m.eval()
        with torch.no_grad():
            metrics = self.recipe.validate(to_device(b, self.device) for b in loader)
        for k, m in self.recipe.nets.items():
            m.train(modes[k])
        self.logger.log(self.step, "val", metrics)
        if self.main:
            self.logger.images(self.step, self._pictures(val_set))
        return metrics

    def _pictures(self, val_set) -> dict[str, np.ndarray]:
        if len(val_set) == 0:
            return {}
        batch = to_device(self.recipe.collate([val_set[(0, 0)]]), self.device)
        with torch.no_grad():
            return self.recipe.visualize(batch)

    def _is_best(self, metrics: dict[str, float]) -> bool:
        key = self.cfg.train.best_metric
        if key not in metrics:
            return False
        value = metrics[key]
        better = self.best["value"] is None or (value > self.best["value"] if self.cfg.train.best_mode == "max"
                                                else value < self.best["value"])
        if better:
            self.best = {"value": value, "step": self.step, "metric": key}
        return better

    def _summary(self, metrics: dict[str, float]) -> None:
        wait = 100 * self.data_wait / max(self.step_time, 1e-9)
        shown = {k: v for k, v in metrics.items() if not k.startswith("iou_")}  # per-class IoU: metrics.jsonl
        print(summary_table({"final": shown} if shown else {}, title=f"\n{self.cfg.name}: {self.step} iterations, "
                            f"data wait {wait:.1f}% of step time"))
        if self.best["value"] is not None:
            print(f"best {self.best['metric']} = {self.best['value']:.4f} at iteration {self.best['step']}")
        print(f"run directory: {self.run_dir}")


class _StopAtStepBoundary:
    """Ctrl-C during training stops at the end of the running iteration instead of inside it: a checkpoint written
    mid-iteration would hold half an optimizer update, a consumed batch and advanced random generators, and the
    resumed run would differ from an uninterrupted one. A second Ctrl-C stops at once (no checkpoint then). Only in
    the main thread and when SIGINT has Python's default handler (an ignored SIGINT stays ignored)."""

    def __init__(self) -> None:
        self.requested = False
        self.previous = None
        # data workers forked after this inherit the handler: they keep serving batches until the trainer stops
        # them at the boundary (instead of dying under a trainer that waits for their batch), and stay quiet
        self.pid = os.getpid()
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if os.getpid() == self.pid:
            print("\nCtrl-C: stopping after this iteration (again: stop now, without a checkpoint)", flush=True)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None
