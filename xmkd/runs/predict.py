"""`xmkd predict RUN_DIR --split S --out DIR`: a trained segmentation run's point predictions for every frame of
a split, written in the dataset's submission format (see `xmkd.eval.submission`). Frames whose file exists
already are skipped, so an interrupted run resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from xmkd.data.labels import get_label_space
from xmkd.engine import checkpoint
from xmkd.engine.data import to_device
from xmkd.engine.recipe import Recipe
from xmkd.errors import XmkdError
from xmkd.eval.submission import SubmissionWriter, keyframe_points
from xmkd.runs.run_dir import run_config, run_recipe


def load_trained(run_dir: str | Path, ckpt: str | Path | None = None, device: str = "cpu",
                 needs: tuple[str, str] | None = None) -> Recipe:
    """The run's recipe with its nets built, loaded from `ckpt` (default: the recipe's `default_checkpoints`: best.pt,
    else last.pt; the UDA recipes' last.pt, as released) and in eval mode.
    `needs` = (method, what it is for): refuse, before loading anything, a recipe without that method (or with only
    the base `Recipe`'s, which raises NotImplementedError)."""
    run_dir = Path(run_dir)
    recipe_cls = run_recipe(run_dir)
    if needs is not None and getattr(recipe_cls, needs[0], None) in (None, getattr(Recipe, needs[0], None)):
        raise XmkdError(f"{run_dir}: recipe {recipe_cls.name!r} {needs[1]}")
    _, cfg = run_config(run_dir)
    ckpt = ckpt or checkpoint.best_or_last(run_dir, recipe_cls.default_checkpoints)
    if getattr(cfg.model, "kd", False):  # predictions come from the student alone; the teacher is not needed
        _, cfg = run_config(run_dir, ["model.kd=false"])
    recipe = recipe_cls(cfg, torch.device(device))
    recipe.build()
    nets = {n: m for n, m in recipe.nets.items() if n not in recipe.frozen()}
    checkpoint.restore_nets(nets, ckpt, device)
    return recipe


def predict_frame(recipe: Recipe, frame: Any) -> np.ndarray:
    """Class id per keyframe point of one frame (ignore where the model makes no prediction)."""
    batch = to_device(recipe.collate([recipe.make_sample(frame, None)]), recipe.device)
    with torch.no_grad():
        return recipe.predict(batch).cpu().numpy()[: keyframe_points(frame)].astype(np.int64)


class _Frames(Dataset):
    """(evaluation sample, frame info) for the frames of a split that still need predictions."""

    def __init__(self, recipe: Recipe, frames: Any, indices: list[int]):
        self.recipe, self.frames, self.indices = recipe, frames, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        frame = self.frames[self.indices[i]]
        info = {"frame_id": frame.frame_id, "meta": frame.meta, "points": keyframe_points(frame),
                "source": frame.source}
        return self.recipe.make_sample(frame, None), info


class _OneFrame:
    def __init__(self, collate: Any):
        self.collate = collate

    def __call__(self, item: tuple[Any, dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
        return self.collate([item[0]]), item[1]


def predict_split(run_dir: str | Path, split: str, out: str | Path, ckpt: str | Path | None = None,
                  eval_set: str | None = None, device: str = "cpu", workers: int = 1,
                  progress: bool = True) -> dict[str, int]:
    recipe = load_trained(run_dir, ckpt, device, needs=(
        "predict", "does not predict point labels (use `xmkd infer` for detection runs)"))
    cfg = recipe.cfg
    frames = recipe.frames(split)
    dataset = frames.index["dataset"]
    use_camera = getattr(cfg.data, "cameras", None) != [] and recipe.name not in ("lidar_seg", "point_mlp")
    writer = SubmissionWriter(dataset, out, get_label_space(cfg.data.label_space), eval_set or split,
                              use_camera=use_camera)
    todo = [i for i, r in enumerate(frames.records) if not writer.path(r["id"], r.get("meta", {})).exists()]
    loader = DataLoader(_Frames(recipe, frames, todo), batch_size=None, num_workers=workers,
                        collate_fn=_OneFrame(recipe.collate))
    for batch, info in tqdm(loader, total=len(todo), desc=f"predict {split}", disable=not progress):
        with torch.no_grad():
            classes = recipe.predict(to_device(batch, recipe.device)).cpu().numpy()
        writer.write_classes(info["frame_id"], info["meta"], classes[: info["points"]].astype(np.int64),
                             info["points"], info["source"])
    writer.finish()
    return {"frames": len(frames), "written": len(todo), "skipped": len(frames) - len(todo)}


def infer_split(run_dir: str | Path, split: str, out: str | Path, ckpt: str | Path | None = None, device: str = "cpu",
                workers: int = 1, progress: bool = True) -> int:
    """A detection run's predictions for every frame of a split, as KITTI label files in `out`; returns the count."""
    from xmkd.data.dataset import FrameSamples
    from xmkd.engine.data import EvalSampler, make_loader

    recipe = load_trained(run_dir, ckpt, device, needs=(
        "write_predictions", "does not predict boxes (use `xmkd predict` for segmentation runs)"))
    samples = FrameSamples(recipe.frames(split), recipe.make_sample, recipe.cfg.seed, train=False)
    loader = make_loader(samples, EvalSampler(len(samples)), recipe.cfg.data.batch_size, recipe.collate, workers,
                         False, False)
    count = 0
    for batch in tqdm(loader, desc=f"infer {split}", disable=not progress):
        count += len(recipe.write_predictions(to_device(batch, recipe.device), Path(out)))
    return count


class _WithIds:
    def __init__(self, collate: Any):
        self.collate = collate

    def __call__(self, samples: list[dict[str, Any]]) -> tuple[Any, list[tuple[str, int, np.ndarray]]]:
        return self.collate(samples), [(s["frame_id"], int(s["points"]), s["raw"]) for s in samples]


def pseudo_label_split(run_dir: str | Path, split: str, out: str | Path, ckpt: str | Path | None = None,
                       device: str = "cpu", workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """2D (fused) and 3D predictions of a domain-adaptation run for every point of a target split -> `out`."""
    from xmkd.data.dataset import FrameSamples
    from xmkd.data.pseudo_labels import IGNORE, PseudoLabels

    recipe = load_trained(run_dir, ckpt, device, needs=(
        "predict_all", "has no 2D / 3D predictions to pseudo-label with"))
    samples = FrameSamples(recipe.frames(split), recipe.make_sample, recipe.cfg.seed, train=False)
    loader = DataLoader(samples, batch_size=recipe.cfg.data.batch_size, num_workers=workers,
                        collate_fn=_WithIds(recipe.collate))
    labels = PseudoLabels(recipe.space.num_classes)
    for batch, ids in tqdm(loader, desc=f"pseudo-label {split}", disable=not progress):
        probs = recipe.predict_all(to_device(batch, recipe.device))
        p2, l2 = (t.cpu().numpy() for t in probs["2d"].max(1))
        p3, l3 = (t.cpu().numpy() for t in probs["3d"].max(1))
        offset = 0
        for frame_id, points, raw in ids:
            part = slice(offset, offset + len(raw))
            labels.add(frame_id, points, raw, p2[part], l2[part], p3[part], l3[part])
            offset += len(raw)
    labels.finish()
    labels.save(out)
    kept = {m: float(np.mean([(labels.refined(f)[i] != IGNORE).sum() / max(1, len(v["raw"]))
                              for f, v in labels.frames.items()])) for i, m in enumerate(("2d", "3d"))}
    return {"frames": len(labels.frames), "kept": kept}
