"""`point_mlp`: a per-point MLP LiDAR segmentation baseline.

Each point is classified from its own coordinates, range and intensity — no neighbourhood, no camera. It is
the floor every real method must clear, and the engine's smallest real workload (tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from xmkd.config import ExperimentConfig
from xmkd.data.dataset import FrameSamples
from xmkd.data.frame import Frame
from xmkd.data.index import IndexedFrames, index_path
from xmkd.data.labels import get_label_space
from xmkd.engine.recipe import Recipe, with_point_labels
from xmkd.eval.segmentation import ConfusionMatrix


@dataclass
class PointMLPModel:
    hidden: list[int] = field(default_factory=lambda: [64, 64, 64])
    dropout: float = 0.0
    max_points: int = 20000  # points sampled per training frame (all points at validation)
    rotate: bool = True  # augmentation: random rotation about z, flip, scale


@dataclass
class PointMLPConfig(ExperimentConfig):
    recipe: str = "point_mlp"
    model: PointMLPModel = field(default_factory=PointMLPModel)


class PointMLP(nn.Module):
    def __init__(self, in_dim: int, hidden: list[int], classes: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(in_dim, h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            in_dim = h
        layers.append(nn.Linear(in_dim, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def point_features(points: np.ndarray, fields: tuple[str, ...]) -> np.ndarray:
    """(N, 5) float32: x, y, z scaled to tens of metres, range, intensity in [0, 1]."""
    xyz = points[:, :3]
    intensity = points[:, fields.index("intensity")] if "intensity" in fields else np.zeros(len(points), np.float32)
    if intensity.size and intensity.max() > 1.5:  # nuScenes-style 0..255
        intensity = intensity / 255.0
    rng = np.linalg.norm(xyz[:, :2], axis=1, keepdims=True)
    return np.column_stack([xyz / 10.0, rng / 10.0, intensity]).astype(np.float32)


class PointMLPRecipe(Recipe):
    name = "point_mlp"
    schema = PointMLPConfig

    def build(self) -> None:
        self.space = get_label_space(self.cfg.data.label_space)
        m = self.cfg.model
        self.nets["net"] = PointMLP(5, list(m.hidden), self.space.num_classes, m.dropout).to(self.device)

    def frames(self, split: str) -> IndexedFrames:
        return IndexedFrames(index_path(self.cfg.data), split, self.cfg.data.label_space, cameras=(),
                             root=self.cfg.data.root)

    def make_sample(self, frame: Frame, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        frame = with_point_labels(frame, rng, self.name, self.space.ignore_index)
        pts, labels = frame.points, frame.labels
        if rng is not None:
            keep = rng.permutation(len(pts))[: self.cfg.model.max_points]
            pts, labels = pts[keep].copy(), labels[keep]
            if self.cfg.model.rotate:
                a = rng.uniform(-np.pi, np.pi)
                c, s = np.cos(a), np.sin(a)
                pts[:, :2] = pts[:, :2] @ np.array([[c, s], [-s, c]], np.float32)
                if rng.random() < 0.5:
                    pts[:, 1] = -pts[:, 1]
                pts[:, :3] *= rng.uniform(0.95, 1.05)
        return {"features": point_features(pts, frame.point_fields), "labels": labels.astype(np.int64)}

    def train_dataset(self) -> FrameSamples:
        return FrameSamples(self.frames(self.cfg.data.train_split).require_labels(self.name), self.make_sample,
                            self.cfg.seed, train=True)

    def val_dataset(self) -> FrameSamples:
        return FrameSamples(self.frames(self.cfg.data.val_split).require_labels(self.name), self.make_sample,
                            self.cfg.seed, train=False)

    def collate(self, samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return {"features": torch.from_numpy(np.concatenate([s["features"] for s in samples])),
                "labels": torch.from_numpy(np.concatenate([s["labels"] for s in samples])),
                "counts": torch.tensor([len(s["labels"]) for s in samples])}

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        logits = self.nets["net"](batch["features"])
        return {"ce": nn.functional.cross_entropy(logits, batch["labels"], ignore_index=self.space.ignore_index)}

    @torch.no_grad()
    def validate(self, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
        cm = ConfusionMatrix(self.space.num_classes, self.space.ignore_index, self.space.class_names)
        for batch in batches:
            cm.update(self.nets["net"](batch["features"]).argmax(1), batch["labels"])
        cm.all_reduce()
        return {"miou": cm.miou("nuscenes"), "accuracy": cm.accuracy("nuscenes")}

    def visualize(self, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Bird's-eye views of one frame: ground truth and prediction, coloured by class."""
        pred = self.nets["net"](batch["features"]).argmax(1).cpu().numpy()
        xy = batch["features"][:, :2].cpu().numpy() * 10.0
        images = {}
        for name, labels in (("gt", batch["labels"].cpu().numpy()), ("pred", pred)):
            img = np.full((256, 256, 3), 255, np.uint8)
            px = np.clip(((xy + 50.0) / 100.0 * 255).astype(int), 0, 255)
            img[255 - px[:, 1], px[:, 0]] = self.space.colorize(labels)
            images[f"bev_{name}"] = img
        return images
