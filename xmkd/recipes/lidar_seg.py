"""`lidar_seg`: LiDAR-only semantic segmentation with the SPVCNN-style sparse U-Net and SphereFormer blocks —
U2MKD's teacher (cr = 2, keyframe + 4 sweeps) and its LiDAR-only baseline student (cr = 1, single sweep).

Input features per point: x, y, z, intensity (scaled to [0, 1]), as the release (its time lag only marks the
keyframe points); `model.time_lag=true` adds the sweeps' time lag as a 5th channel. Sweep points carry label
ignore, so only keyframe points are trained on and scored. Loss: cross-entropy + Lovasz-softmax, per voxel: a
training sample keeps the first point of each voxel (the release's `sparse_quantize`), unless
`model.one_point_per_voxel=false` (every point, so a voxel weighs as many points as it holds). A voxel's input
feature and position are its first point's, as the release's (`model.voxel_feature=mean`: its points' mean).
Validation: point mIoU (nuScenes convention) and accuracy over every keyframe point (points beyond
`data.point_range` are clipped onto its boundary voxels, so the whole scan is scored and can be submitted).
Label-scarce training (`model.labelled`, `xmkd.data.labelled`): only the training frames that keep their labels
are trained on; a `u2mkd` student with the same `model.labelled` keeps the labels of exactly those frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from xmkd.config import ExperimentConfig
from xmkd.data.collate import VOXEL_FEATURES, clip_to_range, in_range, voxel_batch
from xmkd.data.dataset import FrameSamples
from xmkd.data.frame import Frame
from xmkd.data.index import IndexedFrames, index_path
from xmkd.data.instances import InstancePaste, PasteOptions, paste_for
from xmkd.data.labelled import LabelledFrames, check_no_paste, labelled_only
from xmkd.data.labels import get_label_space
from xmkd.engine.recipe import Recipe, with_point_labels
from xmkd.errors import XmkdConfigError
from xmkd.eval.segmentation import ConfusionMatrix
from xmkd.geometry.voxel import voxelize
from xmkd.models.losses import seg_loss
from xmkd.models.point.sparse_unet import SparseUNet, SparseUNetConfig


@dataclass
class Augment:
    rotate: bool = True  # uniform rotation about z
    flip: bool = True  # mirror y (p = 0.5); under a uniform rotation this equals the release's 4-way x / y flip
    scale: list[float] = field(default_factory=lambda: [0.95, 1.05])
    jitter: float = 0.0  # metres (sigma), per point
    translate: float = 0.0  # metres (sigma), one offset per scan and axis (release spformer.yaml translate_std)
    noisy_rot: float = 0.0  # sigma of N(0, sigma^2) noise added to every entry of an identity "rotation" (xMUDA's)


@dataclass
class LidarSegModel:
    backbone: SparseUNetConfig = field(default_factory=SparseUNetConfig)
    lovasz_weight: float = 1.0
    max_points: int = 0  # training: subsample each frame to this many points (0 = all), before one_point_per_voxel
    time_lag: bool = False  # the sweeps' time lag as a 5th input channel (the release has 4: x, y, z, intensity)
    one_point_per_voxel: bool = True  # training: the first point of each voxel only (release: loss per voxel)
    # a voxel's input feature and position: its first point's ("first", release sparse_quantize) or the mean of its
    # points' ("mean"); they differ where a voxel holds several points (evaluation, sweeps)
    voxel_feature: str = "first"
    augment: Augment = field(default_factory=Augment)
    paste: PasteOptions = field(default_factory=PasteOptions)  # instance paste (training only)
    labelled: LabelledFrames = field(default_factory=LabelledFrames)  # label-scarce: train on these frames only


@dataclass
class LidarSegConfig(ExperimentConfig):
    recipe: str = "lidar_seg"
    model: LidarSegModel = field(default_factory=LidarSegModel)


def intensity_scale(frame: Frame) -> float:
    """Datasets store intensity in 0..255 (nuScenes) or 0..1 (SemanticKITTI); networks see 0..1."""
    if "intensity" not in frame.point_fields:
        return 0.0
    i = frame.field("intensity")
    return 1 / 255.0 if i.size and i.max() > 1.5 else 1.0


def scaled_intensity(frame: Frame) -> np.ndarray:
    if "intensity" not in frame.point_fields:
        return np.zeros(frame.num_points, np.float32)
    return (frame.field("intensity") * intensity_scale(frame)).astype(np.float32)


def time_lag(frame: Frame) -> np.ndarray:
    return frame.field("time_lag") if "time_lag" in frame.point_fields else np.zeros(frame.num_points, np.float32)


def scan_with_pasted(frame: Frame, paste: InstancePaste | None, rng: np.random.Generator | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """xyz, scaled intensity, labels and time lag of every point of the frame, followed (in training, with an
    instance database) by the pasted instances' points (time lag 0)."""
    xyz, intensity, labels, lag = frame.points[:, :3], scaled_intensity(frame), frame.labels, time_lag(frame)
    if paste is None or rng is None:
        return xyz, intensity, labels, lag
    n_key = int(frame.meta.get("num_keyframe_points", frame.num_points))
    pts, lab, _ = paste(xyz[:n_key], labels[:n_key], rng)
    return (np.concatenate([xyz, pts[:, :3]]), np.concatenate([intensity, pts[:, 3] * intensity_scale(frame)]),
            np.concatenate([labels, lab]), np.concatenate([lag, np.zeros(len(pts), lag.dtype)]))


def augment_points(xyz: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """Noisy linear map, rotation about z, y-flip, scale, per-point jitter and a global translation of (N, 3)
    points."""
    out = xyz.astype(np.float64)
    if aug.noisy_rot:  # xMUDA's augment_and_scale_3d: points @ (I + N), before the flip and the z rotation
        out = out @ (np.eye(3) + rng.normal(0, aug.noisy_rot, (3, 3)))
    if aug.rotate:
        a = rng.uniform(-np.pi, np.pi)
        c, s = np.cos(a), np.sin(a)
        out[:, :2] = out[:, :2] @ np.array([[c, s], [-s, c]])
    if aug.flip and rng.random() < 0.5:
        out[:, 1] = -out[:, 1]
    out *= rng.uniform(*aug.scale)
    if aug.jitter:
        out += rng.normal(0, aug.jitter, out.shape)
    if aug.translate:
        out += rng.normal(0, aug.translate, 3)
    return out.astype(np.float32)


def first_per_voxel(xyz: np.ndarray, keep: np.ndarray, voxel_size: float, point_range) -> np.ndarray:
    """`keep` reduced to the first kept point of each voxel (torchsparse's `sparse_quantize(return_index=True)`,
    which U2MKD's release trains on: one point, one label per voxel)."""
    idx = np.nonzero(keep)[0]
    out = np.zeros_like(keep)
    out[idx[voxelize(xyz[idx], voxel_size, point_range).first_index]] = True
    return out


def check_voxel_feature(value: str, key: str = "model.voxel_feature") -> str:
    """`value` when it is one of `VOXEL_FEATURES`; else XmkdConfigError naming `key`."""
    if value not in VOXEL_FEATURES:
        raise XmkdConfigError(f"{key}: {value!r} is not one of {', '.join(VOXEL_FEATURES)}")
    return value


def subsample(keep: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """`keep` reduced to at most `max_points` True entries chosen at random (0 = no limit)."""
    if not max_points or keep.sum() <= max_points:
        return keep
    out = np.zeros_like(keep)
    out[rng.choice(np.nonzero(keep)[0], max_points, replace=False)] = True
    return out


def per_class_iou(cm: ConfusionMatrix) -> dict[str, float]:
    """`iou_<class>` for the classes present in ground truth or prediction (nuScenes convention)."""
    return {f"iou_{n}": float(v) for n, v in zip(cm.class_names, cm.iou("nuscenes")) if v == v}


class LidarSegRecipe(Recipe):
    name = "lidar_seg"
    schema = LidarSegConfig

    def build(self) -> None:
        self.space = get_label_space(self.cfg.data.label_space)
        check_voxel_feature(self.cfg.model.voxel_feature)
        in_ch = 5 if self.cfg.model.time_lag else 4
        self.nets["net"] = SparseUNet(in_ch, self.space.num_classes, self.cfg.model.backbone).to(self.device)
        check_no_paste(self.cfg.model.labelled, self.cfg.model.paste.database)
        self.paste = paste_for(self.space, self.cfg.model.paste)

    def frames(self, split: str) -> IndexedFrames:
        d = self.cfg.data
        return IndexedFrames(index_path(d), split, d.label_space, cameras=(), sweeps=d.sweeps, root=d.root)

    def make_sample(self, frame: Frame, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        frame = with_point_labels(frame, rng, self.name, self.space.ignore_index)
        xyz, intensity, labels, lag = scan_with_pasted(frame, self.paste, rng)
        d = self.cfg.data
        if rng is None:  # evaluation: every point, far ones on the boundary voxels
            xyz = clip_to_range(xyz, d.point_range, d.voxel_size)
            keep = np.ones(len(xyz), bool)
        else:
            xyz = augment_points(xyz, rng, self.cfg.model.augment)
            keep = subsample(in_range(xyz, d.point_range), self.cfg.model.max_points, rng)
            if self.cfg.model.one_point_per_voxel:
                keep = first_per_voxel(xyz, keep, d.voxel_size, d.point_range)
        feats = [xyz[keep], intensity[keep, None]]
        if self.cfg.model.time_lag:
            feats.append(lag[keep, None].astype(np.float32))
        return {"xyz": xyz[keep], "features": np.concatenate(feats, 1).astype(np.float32), "labels": labels[keep]}

    def train_dataset(self) -> FrameSamples:
        """The training split; in a label-scarce run (`model.labelled`) only its labelled frames."""
        frames = self.frames(self.cfg.data.train_split).require_labels(self.name)
        return FrameSamples(labelled_only(frames, self.cfg.model.labelled, "lidar_seg"), self.make_sample,
                            self.cfg.seed, train=True)

    def val_dataset(self) -> FrameSamples:
        return FrameSamples(self.frames(self.cfg.data.val_split).require_labels(self.name), self.make_sample,
                            self.cfg.seed, train=False)

    def collate(self, samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        batch = voxel_batch([s["xyz"] for s in samples], [s["features"] for s in samples], self.cfg.data.voxel_size,
                            self.cfg.data.point_range, voxel_feature=self.cfg.model.voxel_feature)
        batch["labels"] = torch.from_numpy(np.concatenate([s["labels"] for s in samples]))
        return batch

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        logits = self.nets["net"](batch)["logits"]
        return seg_loss(logits, batch["labels"], self.space.ignore_index, self.cfg.model.lovasz_weight)

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.nets["net"](batch)["logits"].argmax(1)

    @torch.no_grad()
    def validate(self, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
        cm = ConfusionMatrix(self.space.num_classes, self.space.ignore_index, self.space.class_names)
        for batch in batches:
            cm.update(self.nets["net"](batch)["logits"].argmax(1), batch["labels"])
        cm.all_reduce()
        return {"miou": cm.miou("nuscenes"), "accuracy": cm.accuracy("nuscenes"), **per_class_iou(cm)}
