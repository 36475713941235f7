"""`xmuda`: cross-modal unsupervised domain adaptation for 3D segmentation (xMUDA, the baseline of FtD++; METHODS.md
section 2), and its two reference rows: `source_only` (xMUDA's baseline: source CE only, the target never seen in
training) and `target_only` (the oracle: the same networks trained on the target's labelled training split).

Each step reads one source batch (`data`, labelled) and one target batch (`target`, labels unused) of the points
that project into the front camera. 2D: UNet-ResNet34 features gathered at each point's pixel; 3D: the 7-level
sparse U-Net; each network has a main and a mimicry head. Loss: class-weighted CE on both main heads (source),
plus lambda_xm_src / lambda_xm_trg times the cross-modal KL KL(sg softmax(3D main) || 2D mimic) + KL(sg softmax(2D
main) || 3D mimic) on source / target, plus optional entropy minimisation on the target.
Validation (the target's validation split): mIoU of 2D, 3D and xM (argmax of the summed softmaxes).

Data as released (XJ = valeoai/xmuda_journal, FTD = Barcaaaa/FtD-PlusPlus; docs/ftd.md, Release parity):
- every point that projects into the camera is trained on and scored; the release's 4096^3 grid of 5 cm voxels
  spans 204.8 m (FTD:xmuda/data/utils/validate.py#L71 asserts that every point is scored), xmkd clips points beyond
  `point_range` onto its boundary voxels;
- class weights log(5 N / N_c) / min from the front-camera points of the source training split (the release's
  rule, FTD:xmuda/data/nuscenes_lidarseg/nuscenes_lidarseg_dataloader.py#L306-L327; its configs hard-code the
  result, `model.class_weight_values` here);
- training images: ColorJitter(0.4, 0.4, 0.4) (XJ / FTD xmuda/config/xmuda.py), horizontal flip; vKITTI: a random
  weather per sample and 10 000 points (FTD:xmuda/data/virtual_kitti/virtual_kitti_dataloader.py#L149-L178);
- SSDA (`model.ssda_labelled_split`): round(B/2) source + the rest labelled target frames collated, B unlabelled
  target frames, supervised loss 0.5 (CE_source + CE_labelled) (XJ:xmuda/train_xmssda.py#L124-L131,L239,L246).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from xmkd.config import DataConfig, ExperimentConfig
from xmkd.data.collate import clip_to_range, voxel_batch
from xmkd.data.color import color_jitter
from xmkd.data.dataset import FrameSamples, sample_rng
from xmkd.data.frame import Frame
from xmkd.data.index import IndexedFrames, index_path, load_index
from xmkd.data.labels import get_label_space
from xmkd.data.readers.base import read_image
from xmkd.data.readers.virtual_kitti import WEATHERS, weather_image
from xmkd.distill.losses import kl_probs
from xmkd.engine.checkpoint import unwrap
from xmkd.engine.recipe import Recipe
from xmkd.errors import XmkdConfigError
from xmkd.eval.segmentation import ConfusionMatrix
from xmkd.geometry.camera import project_points
from xmkd.io import atomic_write_text, is_architecture_only
from xmkd.models.image.resnet import normalize_images
from xmkd.models.image.unet import UNetResNet
from xmkd.models.point.scn_unet import SCNUNet
from xmkd.recipes.lidar_seg import Augment, augment_points, subsample
from xmkd.recipes.u2mkd import resize_camera


@dataclass
class XMUDAModel:
    camera: str = "CAM_FRONT"
    backbone_2d: str = "resnet34"
    pretrained_2d: str = ""  # ImageNet state dict file (torchvision names)
    dropout_2d: float = 0.4
    scn_levels: int = 7
    scn_bn_momentum: float = 0.01  # PyTorch's convention; SparseConvNet's BatchNormReLU default (0.99 in its own)
    lambda_xm_src: float = 1.0
    lambda_xm_trg: float = 0.1
    lambda_minent: float = 0.0
    class_weights: bool = True  # log(5 N / N_c) / min over the front-camera points of the source training split
    max_points: int = 0
    # the release's 3D augmentation: N(0, 0.1^2) noise on the rotation matrix, a flip, a rotation about z
    augment: Augment = field(default_factory=lambda: Augment(rotate=True, flip=True, scale=[1.0, 1.0], noisy_rot=0.1))
    hflip: bool = True  # horizontal image flip (with the pixels of the points)
    # [W, H]: in training, a W x H window at the bottom of the image at a random horizontal position (xMUDA's
    # KITTI-family crop), for every domain that keeps its native image size (empty `image_size`)
    bottom_crop: list[int] = field(default_factory=list)
    ssda_labelled_split: str = ""  # SSDA: a labelled split of the target, collated with every source batch
    # class weights given outright (the release's configs hard-code them: TRAIN.CLASS_WEIGHTS); [] = computed
    class_weight_values: list[float] = field(default_factory=list)
    ssda_class_weight_values: list[float] = field(default_factory=list)  # the labelled target's (CLASS_WEIGHTS_TRG)
    color_jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.4])  # training images; [] = off
    lambda_seg_3d: float = 1.0  # weight of the 3D source CE (FtD++ vK->SK: 0.1)
    lr_2d: float = 0.0  # the 2D network's learning rate (FtD++ U->S, vK->SK, A2D2: 1e-4); 0 = train.optimizer.lr
    source_points: int = 0  # training: the source cloud drawn down to this many points first (vKITTI: 10000)
    random_weather: list[str] = field(default_factory=list)  # training: a vKITTI weather per source sample
    image_normalizer: str = "none"  # none: [0, 1] images (the release's) | imagenet: ImageNet mean / std
    absent_class_iou: str = "zero"  # a class absent from ground truth and prediction: zero (release) | skip
    # training: the release's random translation inside its grid as the sparse U-Net sees it: a uniform shift of
    # 0 .. 2^(scn_levels - 1) voxels per axis (the voxelisation phase and the alignment of the stride-2 levels)
    translate_3d: bool = True


@dataclass
class XMUDAConfig(ExperimentConfig):
    recipe: str = "xmuda"
    target: DataConfig = field(default_factory=DataConfig)  # the target domain (its labels only for validation)
    model: XMUDAModel = field(default_factory=XMUDAModel)


def log_class_weights(counts: np.ndarray) -> np.ndarray:
    """xMUDA's class weights log(5 N / N_c), divided by the smallest (as released), from per-class point counts."""
    w = np.log(5 * counts.sum() / np.maximum(counts, 1))
    return (w / w.min()).astype(np.float32)


def counts_cache(d: DataConfig) -> Path:
    """Where the front-camera class counts of a domain's splits are kept: beside its prepared index."""
    p = index_path(d)
    return (p if p.is_dir() else p.parent) / "front_camera_class_counts.json"


def bottom_crop(image: np.ndarray, uv: np.ndarray, crop: list[int], rng: np.random.Generator,
                keep: np.ndarray | None = None, tries: int = 10, min_points: int = 100
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], np.ndarray]:
    """A crop[0] x crop[1] window at the bottom of `image`, at a random horizontal offset: the cropped image, the
    pixels moved into it, its (W, H) and which pixels fall inside. As released (FTD:xmuda/data/semantic_kitti/
    semantic_kitti_dataloader.py#L228-L249), the offset is drawn again (up to `tries` times) while at most
    `min_points` of the `keep` points fall inside; the last draw stands."""
    h, w = image.shape[:2]
    cw, ch = min(int(crop[0]), w), min(int(crop[1]), h)
    keep = np.ones(len(uv), bool) if keep is None else keep
    for _ in range(tries):
        left, top = int(rng.integers(0, w - cw + 1)), h - ch
        moved = uv - np.array([left, top], np.float32)
        inside = (moved[:, 0] >= 0) & (moved[:, 0] < cw) & (moved[:, 1] >= 0) & (moved[:, 1] < ch)
        if (inside & keep).sum() > min_points:
            break
    return np.ascontiguousarray(image[top:, left:left + cw]), moved, (cw, ch), inside


class Deferred:
    """A sample that is loaded only if the collate function keeps it (`.load()`): an SSDA item draws both a source
    and a labelled target sample, and the batch keeps the first of the one or the other."""

    def __init__(self, dataset: Dataset, key: tuple[int, int]):
        self.dataset, self.key = dataset, key

    def load(self) -> Any:
        return self.dataset[self.key]


class PairedSamples(Dataset):
    """Source sample i of an epoch with a target sample drawn from (seed, epoch, i): one UDA training item; with
    `labelled` (SSDA) also a labelled target sample drawn the same way, the source and labelled samples deferred
    (the collate function keeps half of each). `with_target` false: the target sample is drawn but not loaded (a
    recipe that never forwards it), so the other draws stay the same. `coin` is a uniform draw of the item (the
    first item's decides per-batch choices such as FtD++'s mixup-or-FDA)."""

    def __init__(self, source: FrameSamples, target: FrameSamples, seed: int, labelled: FrameSamples | None = None,
                 with_target: bool = True):
        self.source, self.target, self.seed, self.labelled = source, target, seed, labelled
        self.with_target = with_target

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        rng = sample_rng(self.seed + 7919, epoch, i)
        item: dict[str, Any] = {"source": self.source[(epoch, i)] if self.labelled is None
                                else Deferred(self.source, (epoch, i))}
        j = int(rng.integers(len(self.target)))
        if self.with_target:
            item["target"] = self.target[(epoch, j)]
        if self.labelled is not None:
            item["target_labelled"] = Deferred(self.labelled, (epoch, int(rng.integers(len(self.labelled)))))
        item["coin"] = float(rng.random())
        return item


class DualHead(nn.Module):
    """Main and mimicry linear heads on a feature."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.main, self.mimic = nn.Linear(dim, classes), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.main(x), self.mimic(x)


class XMUDARecipe(Recipe):
    name = "xmuda"
    # as released (xmuda README): tests and pseudo-labels from the last checkpoint, so that nothing is selected on
    # the validation split, which the nuScenes configs share with the test split; `--ckpt RUN/checkpoints/best.pt`
    default_checkpoints = ("last.pt",)
    # a domain's camera is its cameras[0], else model.camera (`camera_of`): [] and null both mean model.camera (runs
    # saved before data.cameras: [] came to mean "none" elsewhere hold [])
    same_values = {"data.cameras": [[[], None]], "target.cameras": [[[], None]]}
    schema = XMUDAConfig

    def build(self) -> None:
        m = self.cfg.model
        self.space = get_label_space(self.source_data().label_space)
        target_space = get_label_space(self.cfg.target.label_space)
        if target_space.class_names != self.space.class_names:  # e.g. virtualkitti6 and semantickitti_vkitti6 agree
            raise XmkdConfigError(f"target.label_space {target_space.name!r} and data.label_space {self.space.name!r} "
                                  f"have different classes: {target_space.class_names} vs {self.space.class_names}")
        for key in ("class_weight_values", "ssda_class_weight_values"):
            values = getattr(m, key)
            if values and (len(values) != self.space.num_classes or min(values) <= 0):
                raise XmkdConfigError(f"model.{key}: expected {self.space.num_classes} positive weights "
                                      f"({', '.join(self.space.class_names)}), got {values}")
        if m.random_weather:
            if self.source_data().dataset != "virtualkitti" or not set(m.random_weather) <= set(WEATHERS):
                raise XmkdConfigError(f"model.random_weather: a list of VKITTI weathers ({', '.join(WEATHERS)}) "
                                      f"for a virtualkitti source, got {m.random_weather} for "
                                      f"{self.source_data().dataset!r}")
        for key, allowed in (("image_normalizer", ("none", "imagenet")), ("absent_class_iou", ("zero", "skip"))):
            if getattr(m, key) not in allowed:
                raise XmkdConfigError(f"model.{key}: expected one of {', '.join(allowed)}, got {getattr(m, key)!r}")
        if m.color_jitter and (len(m.color_jitter) != 3 or min(m.color_jitter) < 0):
            raise XmkdConfigError(f"model.color_jitter: expected [brightness, contrast, saturation] >= 0 or [], got "
                                  f"{m.color_jitter}")
        self.nets["net2d"] = self.make_net2d().to(self.device)
        self.nets["net3d"] = self.make_net3d().to(self.device)
        self._weights: dict[str, torch.Tensor] = {}
        if not is_architecture_only():  # a training build stops here, not at its first step, without the index
            load_index(index_path(self.source_data()))

    def make_net2d(self) -> nn.Module:
        """UNet-ResNet34 (or -18) with the main and mimicry heads on its 64-d point features."""
        m = self.cfg.model
        if m.pretrained_2d and not is_architecture_only() and not Path(m.pretrained_2d).is_file():
            raise XmkdConfigError(f"model.pretrained_2d: {m.pretrained_2d}: no such file (an ImageNet ResNet state "
                                  "dict with torchvision's names; '' for a random initialisation)")
        return nn.ModuleDict({"backbone": UNetResNet(m.backbone_2d, m.dropout_2d, m.pretrained_2d),
                              "head": DualHead(64, self.space.num_classes)})

    def make_net3d(self) -> nn.Module:
        """The sparse U-Net with the main and mimicry heads on its 16-d point features."""
        m = self.cfg.model
        return nn.ModuleDict({"backbone": SCNUNet(levels=m.scn_levels, bn_momentum=m.scn_bn_momentum),
                              "head": DualHead(16, self.space.num_classes)})

    def modules_2d(self) -> list[nn.Module]:
        """The modules `model.lr_2d` applies to (the release's `model_2d`)."""
        return [self.nets["net2d"]]

    def param_groups(self) -> dict[str, list[dict[str, Any]]]:
        """One optimizer; with `model.lr_2d` the 2D modules form a second group at that learning rate (the release
        builds the 2D optimizer with 0.1 x BASE_LR, FTD:xmuda/common/solver/build.py `build_optimizer_small_lr`)."""
        groups = super().param_groups()
        lr_2d = self.cfg.model.lr_2d
        if not lr_2d:
            return groups
        ids = {id(p) for module in self.modules_2d() for p in unwrap(module).parameters()}
        params = groups["main"][0]["params"]
        return {"main": [{"params": [p for p in params if id(p) not in ids]},
                         {"params": [p for p in params if id(p) in ids], "lr": lr_2d}]}

    # -- class weights --------------------------------------------------------------------------------------
    @property
    def weights(self) -> torch.Tensor:
        """Class weights of the (source) supervised CE, (C,); computed on first use (training only)."""
        if "source" not in self._weights:
            src = self.source_data()
            self._weights["source"] = self.class_weights_of(src, src.train_split, self.cfg.model.class_weight_values)
        return self._weights["source"]

    @property
    def target_weights(self) -> torch.Tensor:
        """SSDA: class weights of the labelled target's CE, (C,)."""
        if "target" not in self._weights:
            m = self.cfg.model
            self._weights["target"] = self.class_weights_of(self.cfg.target, m.ssda_labelled_split,
                                                            m.ssda_class_weight_values)
        return self._weights["target"]

    def class_weights_of(self, d: DataConfig, split: str, values: list[float]) -> torch.Tensor:
        n = self.space.num_classes
        if values:
            w = np.asarray(values, np.float32)
        elif self.cfg.model.class_weights:
            w = log_class_weights(self.front_camera_counts(d, split))
        else:
            w = np.ones(n, np.float32)
        return torch.from_numpy(w).to(self.device)

    def front_camera_counts(self, d: DataConfig, split: str) -> np.ndarray:
        """Points per class among the front-camera points of every frame of a split (the release computes its class
        weights over its preprocessed front-camera points), cached beside the index (keyed by camera, label space
        and the split's frame ids)."""
        frames = self.frames_of(d, split)
        ids = sorted(r["id"] for r in frames.records)
        key = "|".join([split, self.camera_of(d), d.label_space, hashlib.sha1("\n".join(ids).encode()).hexdigest()])
        cache = counts_cache(d)
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        if key in known:
            return np.asarray(known[key], np.float64)
        n, ig = self.space.num_classes, self.space.ignore_index
        counts = np.zeros(n, np.float64)
        print(f"class weights: counting the front-camera points of {len(frames)} frames of {split!r}",
              file=sys.stderr)
        for i in range(len(frames)):
            labels = self.make_domain_sample(frames[i], None, d, "count")["labels"]
            counts += np.bincount(labels[labels != ig], minlength=n)[:n]
        known[key] = counts.tolist()
        try:
            atomic_write_text(cache, json.dumps(known, indent=1))
        except OSError:  # a read-only index: count again next time
            pass
        return counts

    # -- data -----------------------------------------------------------------------------------------------
    def source_data(self) -> DataConfig:
        """The labelled training domain."""
        return self.cfg.data

    def camera_of(self, d: DataConfig) -> str:
        """The domain's camera: its `cameras[0]` (A2D2 and SemanticKITTI name theirs differently), else model.camera."""
        return d.cameras[0] if d.cameras else self.cfg.model.camera

    def frames_of(self, d: DataConfig, split: str) -> IndexedFrames:
        return IndexedFrames(index_path(d), split, d.label_space, cameras=[self.camera_of(d)], root=d.root)

    def frames(self, split: str) -> IndexedFrames:  # `xmkd predict` / pseudo-labels: the target domain
        return self.frames_of(self.cfg.target, split)

    def sample_maker(self, domain: str):
        """Samples of a domain: "source", "target" (unlabelled; pseudo-labels if any) or "target_labelled" (SSDA)."""
        d = self.source_data() if domain == "source" else self.cfg.target

        def make(frame: Frame, rng: np.random.Generator | None) -> dict[str, Any]:
            return self.make_domain_sample(frame, rng, d, domain)
        return make

    def make_sample(self, frame: Frame, rng: np.random.Generator | None) -> dict[str, Any]:
        return self.make_domain_sample(frame, rng, self.cfg.target, "target")

    def make_domain_sample(self, frame: Frame, rng: np.random.Generator | None, d: DataConfig, domain: str
                           ) -> dict[str, Any]:
        """Every keyframe point that projects into the domain's camera (rng None: evaluation, no augmentation).
        Training: vKITTI weather and downsampling (source), bottom crop, `max_points`, 3D augmentation, colour
        jitter, horizontal flip and (`translate_3d`) a random shift: its fraction of a voxel moves the points, its
        whole voxels go to `voxel_offset` (added on the grid by `voxel_batch`). Points beyond `point_range` are
        clipped onto its boundary voxels."""
        m = self.cfg.model
        cam = frame.cameras.get(self.camera_of(d))
        if cam is None:
            raise ValueError(f"{frame.source}: no camera {self.camera_of(d)!r} (have {sorted(frame.cameras)})")
        image = cam.image
        if rng is not None and domain == "source" and m.random_weather:
            image = read_image(weather_image(cam.source, str(rng.choice(m.random_weather))))
        size = tuple(d.image_size) if d.image_size else (image.shape[1], image.shape[0])
        image, K = resize_camera(image, cam.K, size)
        n_key = int(frame.meta.get("num_keyframe_points", frame.num_points))
        shift = None
        xyz = frame.points[:n_key, :3]
        proj = project_points(xyz, K, cam.T_cam_lidar, size)
        keep, uv = proj.visible, proj.uv.astype(np.float32)
        labels = (frame.labels[:n_key] if frame.labels is not None
                  else np.full(n_key, self.space.ignore_index, np.int64))
        if rng is not None:
            if domain == "source" and m.source_points:
                keep = subsample(keep, m.source_points, rng)
            if m.bottom_crop and not d.image_size:
                image, uv, size, inside = bottom_crop(image, uv, m.bottom_crop, rng, keep)
                keep &= inside
            keep = subsample(keep, m.max_points, rng)
            xyz = augment_points(xyz, rng, m.augment)
            if m.color_jitter:
                image = color_jitter(image, m.color_jitter, rng)
            if m.hflip and rng.random() < 0.5:
                image = image[:, ::-1].copy()
                uv[:, 0] = np.clip(size[0] - uv[:, 0], 0, size[0] - 1e-3)
            shift = rng.uniform(0, 2 ** (m.scn_levels - 1), 3) if m.translate_3d else None
        # far points (or points that augmentation moved off the grid) sit on the boundary voxels: every
        # front-camera point is trained on and scored, as in the release
        # (`metric`: the points where they are, for FtD++'s density transfer over the whole cloud)
        moved = xyz[keep] if shift is None else xyz[keep] + (shift % 1) * np.asarray(d.voxel_size)
        sample = {"xyz": clip_to_range(moved, d.point_range, d.voxel_size), "metric": xyz[keep].astype(np.float32),
                  "uv": uv[keep], "labels": labels[keep], "image": image, "raw": np.nonzero(keep)[0],
                  "frame_id": frame.frame_id, "points": n_key}
        if shift is not None:  # the whole voxels of the shift: on the grid (voxel_batch), past its far edge
            sample["voxel_offset"] = np.floor(shift).astype(np.int64)
        return sample

    def train_dataset(self) -> Dataset:
        c = self.cfg
        src = self.source_data()
        source = FrameSamples(self.frames_of(src, src.train_split).require_labels(self.name),
                              self.sample_maker("source"), c.seed, True)
        target = FrameSamples(self.frames_of(c.target, c.target.train_split), self.sample_maker("target"), c.seed,
                              True)
        labelled = None
        if c.model.ssda_labelled_split:
            labelled = FrameSamples(self.frames_of(c.target, c.model.ssda_labelled_split).require_labels(self.name),
                                    self.sample_maker("target_labelled"), c.seed + 1, True)
        return PairedSamples(source, target, c.seed, labelled, with_target=self.uses_target())

    def val_dataset(self) -> Dataset:
        t = self.cfg.target
        return FrameSamples(self.frames_of(t, t.val_split).require_labels(self.name), self.sample_maker("target"),
                            self.cfg.seed, train=False)

    def _domain_batch(self, samples: list[dict[str, Any]], d: DataConfig) -> dict[str, Any]:
        offsets = [s["voxel_offset"] for s in samples] if "voxel_offset" in samples[0] else None
        batch = voxel_batch([s["xyz"] for s in samples], [np.ones((len(s["xyz"]), 1), np.float32) for s in samples],
                            d.voxel_size, d.point_range, multiple=2 ** (self.cfg.model.scn_levels - 1), offsets=offsets)
        # native sizes differ between SemanticKITTI sequences: pad right / bottom (no pixel of a point moves)
        h, w = max(s["image"].shape[0] for s in samples), max(s["image"].shape[1] for s in samples)
        images = np.zeros((len(samples), h, w, 3), samples[0]["image"].dtype)
        for i, s in enumerate(samples):
            images[i, :s["image"].shape[0], :s["image"].shape[1]] = s["image"]
        batch["images"] = torch.from_numpy(images).permute(0, 3, 1, 2)
        batch["point_uv"] = torch.from_numpy(np.concatenate([s["uv"] for s in samples]))
        batch["labels"] = torch.from_numpy(np.concatenate([s["labels"] for s in samples]))
        return batch

    @staticmethod
    def supervised_samples(samples: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """The labelled frames of a training batch and how many of them are source frames: every item's source
        sample (UDA), or round(B / 2) source samples then B - round(B / 2) labelled target samples (SSDA, as
        released: `round(SRC_TRG_RATIO * BATCH_SIZE)` with ratio 0.5)."""
        if "target_labelled" not in samples[0]:
            return [s["source"] for s in samples], len(samples)
        n = round(0.5 * len(samples))
        return [s["source"].load() for s in samples[:n]] + [s["target_labelled"].load() for s in samples[n:]], n

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        if "source" not in samples[0]:
            return self._domain_batch(samples, self.cfg.target)
        supervised, n_source = self.supervised_samples(samples)
        targets = [s["target"] for s in samples] if "target" in samples[0] else None
        return self.collate_training(supervised, n_source, targets, samples)

    def collate_training(self, supervised: list[dict[str, Any]], n_source: int,
                         targets: list[dict[str, Any]] | None, items: list[dict[str, Any]]) -> dict[str, Any]:
        """The training batch: "source" (the labelled frames; `from_target` marks the labelled target's points)
        and "target" (the unlabelled frames, if the recipe reads them)."""
        batch = {"source": self._domain_batch(supervised, self.source_data())}
        if targets is not None:
            batch["target"] = self._domain_batch(targets, self.cfg.target)
        batch["source"]["from_target"] = batch["source"]["point_batch"] >= n_source
        return batch

    # -- steps ----------------------------------------------------------------------------------------------
    def image_features(self, backbone: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The 2D network's (B, 64, H, W) feature map of the batch's images and its (N, 64) feature at each point's
        pixel. Images go in as [0, 1] floats (the release's `image_normalizer=()`) or ImageNet-normalised
        (`model.image_normalizer: imagenet`)."""
        images = batch["images"]
        x = normalize_images(images) if self.cfg.model.image_normalizer == "imagenet" else images.float() / 255.0
        img = backbone(x)
        h, w = img.shape[-2:]
        cols = batch["point_uv"][:, 0].long().clamp(0, w - 1)
        rows = batch["point_uv"][:, 1].long().clamp(0, h - 1)
        return img, img[batch["point_batch"], :, rows, cols]

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per point: 2D / 3D main and mimicry logits, and the point features of both networks."""
        img, f2 = self.image_features(self.nets["net2d"]["backbone"], batch)
        f3 = self.nets["net3d"]["backbone"](batch)
        main2, mimic2 = self.nets["net2d"]["head"](f2)
        main3, mimic3 = self.nets["net3d"]["head"](f3)
        return {"main2d": main2, "mimic2d": mimic2, "main3d": main3, "mimic3d": mimic3, "feat2d": f2, "feat3d": f3,
                "image_features": img}

    @staticmethod
    def xm_loss(out: dict[str, torch.Tensor]) -> torch.Tensor:
        """KL(sg softmax(3D main) || 2D mimic) + KL(sg softmax(2D main) || 3D mimic)."""
        return (kl_probs(out["mimic2d"], F.softmax(out["main3d"], 1).detach())
                + kl_probs(out["mimic3d"], F.softmax(out["main2d"], 1).detach()))

    def uses_target(self) -> bool:
        """Whether training reads the unlabelled target: not for source-only and the oracle (both target weights
        0), as in xMUDA's baseline."""
        m = self.cfg.model
        return bool(m.lambda_xm_trg or m.lambda_minent)

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        return self.adaptation_losses(batch)[0]

    def adaptation_losses(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
        """Source CE, cross-modal KL on source and target, MinEnt; also the source and target outputs (None for
        the target when the batch has none)."""
        m, ig = self.cfg.model, self.space.ignore_index
        src = self.forward(batch["source"])
        trg = self.forward(batch["target"]) if "target" in batch else None
        y = batch["source"]["labels"]
        if not m.ssda_labelled_split:
            losses = {"seg_2d": F.cross_entropy(src["main2d"], y, weight=self.weights, ignore_index=ig),
                      "seg_3d": F.cross_entropy(src["main3d"], y, weight=self.weights, ignore_index=ig)}
        else:  # SSDA: the mean of the source CE and the labelled target's CE, each with its own class weights
            t = batch["source"]["from_target"]
            y_s, y_t = torch.where(t, ig, y), torch.where(t, y, ig)
            losses = {}
            for name, key in (("seg_2d", "main2d"), ("seg_3d", "main3d")):
                losses[name] = 0.5 * sum(F.cross_entropy(src[key], yy, weight=w, ignore_index=ig)
                                         if (yy != ig).any() else src[key].sum() * 0
                                         for yy, w in ((y_s, self.weights), (y_t, self.target_weights)))
        losses["seg_3d"] = m.lambda_seg_3d * losses["seg_3d"]
        if m.lambda_xm_src:
            losses["xm_src"] = m.lambda_xm_src * self.xm_loss(src)
        if m.lambda_xm_trg and trg is not None:
            losses["xm_trg"] = m.lambda_xm_trg * self.xm_loss(trg)
        if m.lambda_minent and trg is not None:
            # entropy / log C, as the release's entropy_loss (FTD:xmuda/models/losses.py#L7-L22)
            ent = sum(-(F.softmax(trg[k], 1) * F.log_softmax(trg[k], 1)).sum(1).mean() for k in ("main2d", "main3d"))
            ent = ent / math.log(self.space.num_classes)
            losses["minent"] = m.lambda_minent * ent
        return losses, src, trg

    @torch.no_grad()
    def predict_all(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per point softmax probabilities of 2D, 3D and xM (their sum, renormalised)."""
        out = self.forward(batch)
        p2, p3 = F.softmax(out["main2d"], 1), F.softmax(out["main3d"], 1)
        return {"2d": p2, "3d": p3, "xm": (p2 + p3) / 2}

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.predict_all(batch)["xm"].argmax(1)

    @torch.no_grad()
    def validate(self, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        n, ig, names = self.space.num_classes, self.space.ignore_index, self.space.class_names
        cms = {k: ConfusionMatrix(n, ig, names) for k in ("2d", "3d", "xm")}
        for batch in batches:
            for k, p in self.predict_all(batch).items():
                cms[k].update(p.argmax(1), batch["labels"])
        # the release counts a class absent from ground truth and prediction as IoU 0 (FTD:xmuda/data/utils/
        # evaluate.py `overall_iou`): the "semantickitti" convention, as argmax never predicts ignore
        conv = "semantickitti" if self.cfg.model.absent_class_iou == "zero" else "nuscenes"
        metrics = {f"miou_{k}": cm.all_reduce().miou(conv) for k, cm in cms.items()}
        metrics.update({f"iou_xm_{c}": float(v) for c, v in zip(names, cms["xm"].iou(conv)) if v == v})
        return metrics


class SourceOnlyRecipe(XMUDARecipe):
    """xMUDA's networks trained on the labelled source alone (no cross-modal loss, no target batch)."""

    name = "source_only"

    def build(self) -> None:
        m = self.cfg.model
        for key in ("lambda_xm_src", "lambda_xm_trg", "lambda_minent"):
            if getattr(m, key):
                raise XmkdConfigError(f"model.{key}: the source_only recipe trains without it; set it to 0 "
                                      f"(got {getattr(m, key)}) or use recipe: xmuda")
        super().build()


class TargetOnlyRecipe(SourceOnlyRecipe):
    """The oracle: the same networks trained on the target's labelled training split (`target.train_split`);
    the `data` section is not read."""

    name = "target_only"

    def source_data(self) -> DataConfig:
        return self.cfg.target
