"""`xmuda`: cross-modal unsupervised domain adaptation for 3D segmentation (xMUDA, the baseline of FtD++; METHODS.md
section 2), and its two reference rows: `source_only` (xMUDA's baseline: source CE only, the target never seen in
training) and `target_only` (the oracle: the same networks trained on the target's labelled training split).

Each step reads one source batch (`data`, labelled) and one target batch (`target`, labels unused) of the points
that project into the front camera. 2D: UNet-ResNet34 features gathered at each point's pixel; 3D: the 7-level
sparse U-Net; each network has a main and a mimicry head. Loss: class-weighted CE on both main heads (source),
plus lambda_xm_src / lambda_xm_trg times the cross-modal KL KL(sg softmax(3D main) || 2D mimic) + KL(sg softmax(2D
main) || 3D mimic) on source / target, plus optional entropy minimisation on the target.
Validation (the target's validation split): mIoU of 2D, 3D and xM (argmax of the summed softmaxes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from xmkd.config import DataConfig, ExperimentConfig
from xmkd.data.collate import in_range, voxel_batch
from xmkd.data.dataset import FrameSamples
from xmkd.data.frame import Frame
from xmkd.data.index import IndexedFrames, index_path, load_index
from xmkd.data.labels import get_label_space
from xmkd.distill.losses import kl_probs
from xmkd.engine.data import sample_rng
from xmkd.engine.recipe import Recipe
from xmkd.errors import XmkdConfigError
from xmkd.eval.segmentation import ConfusionMatrix
from xmkd.geometry.camera import project_points
from xmkd.io import is_architecture_only
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
    class_weights: bool = True  # log(5 N / N_c), normalised, from the source training split
    max_points: int = 0
    augment: Augment = field(default_factory=lambda: Augment(rotate=True, flip=True, scale=[0.95, 1.05]))
    hflip: bool = True  # horizontal image flip (with the pixels of the points)
    # [W, H]: in training, a W x H window at the bottom of the image at a random horizontal position (xMUDA's
    # KITTI-family crop), for every domain that keeps its native image size (empty `image_size`)
    bottom_crop: list[int] = field(default_factory=list)
    ssda_labelled_split: str = ""  # SSDA: a labelled split of the target, collated with every source batch


@dataclass
class XMUDAConfig(ExperimentConfig):
    recipe: str = "xmuda"
    target: DataConfig = field(default_factory=DataConfig)  # the target domain (its labels only for validation)
    model: XMUDAModel = field(default_factory=XMUDAModel)


def class_weights(index: dict[str, Any], split: str, space_name: str) -> np.ndarray:
    """xMUDA's class weights log(5 N / N_c), divided by the smallest (as released), from the label histograms
    `xmkd prepare` stored for every frame of the split."""
    from xmkd.data.readers import make_reader

    reader = make_reader(index["dataset"], index["root"], space_name, meta=index.get("meta"))
    lut = reader.raw_lut()
    ids = set(index["split_ids"][split])
    counts = np.zeros(reader.label_space.num_classes, np.float64)
    for rec in index["frames"]:
        if rec["id"] not in ids:
            continue
        for raw, n in rec["stats"].get("labels", {}).items():
            c = lut[int(raw)] if int(raw) < len(lut) else reader.label_space.ignore_index
            if c < len(counts):
                counts[c] += n
    w = np.log(5 * counts.sum() / np.maximum(counts, 1))
    return (w / w.min()).astype(np.float32)


def bottom_crop(image: np.ndarray, uv: np.ndarray, crop: list[int], rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], np.ndarray]:
    """A crop[0] x crop[1] window at the bottom of `image`, at a random horizontal offset: the cropped image, the
    pixels moved into it, its (W, H) and which pixels fall inside."""
    h, w = image.shape[:2]
    cw, ch = min(int(crop[0]), w), min(int(crop[1]), h)
    left, top = int(rng.integers(0, w - cw + 1)), h - ch
    uv = uv - np.array([left, top], np.float32)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < cw) & (uv[:, 1] >= 0) & (uv[:, 1] < ch)
    return np.ascontiguousarray(image[top:, left:left + cw]), uv, (cw, ch), inside


class PairedSamples(Dataset):
    """Source sample i of an epoch with a target sample drawn from (seed, epoch, i): one UDA training item; with
    `labelled` (SSDA) also a labelled target sample drawn the same way. `with_target` false: the target sample is
    drawn but not loaded (a recipe that never forwards it), so the other draws stay the same."""

    def __init__(self, source: FrameSamples, target: FrameSamples, seed: int, labelled: FrameSamples | None = None,
                 with_target: bool = True):
        self.source, self.target, self.seed, self.labelled = source, target, seed, labelled
        self.with_target = with_target

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        rng = sample_rng(self.seed + 7919, epoch, i)
        item = {"source": self.source[(epoch, i)]}
        j = int(rng.integers(len(self.target)))
        if self.with_target:
            item["target"] = self.target[(epoch, j)]
        if self.labelled is not None:
            item["target_labelled"] = self.labelled[(epoch, int(rng.integers(len(self.labelled))))]
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
    schema = XMUDAConfig

    def build(self) -> None:
        m = self.cfg.model
        self.space = get_label_space(self.source_data().label_space)
        target_space = get_label_space(self.cfg.target.label_space)
        if target_space.class_names != self.space.class_names:  # e.g. virtualkitti6 and semantickitti_vkitti6 agree
            raise XmkdConfigError(f"target.label_space {target_space.name!r} and data.label_space {self.space.name!r} "
                                  f"have different classes: {target_space.class_names} vs {self.space.class_names}")
        n = self.space.num_classes
        self.nets["net2d"] = nn.ModuleDict({"backbone": UNetResNet(m.backbone_2d, m.dropout_2d, m.pretrained_2d),
                                            "head": DualHead(64, n)}).to(self.device)
        self.nets["net3d"] = nn.ModuleDict({"backbone": SCNUNet(levels=m.scn_levels, bn_momentum=m.scn_bn_momentum),
                                            "head": DualHead(16, n)}).to(self.device)
        src = self.source_data()
        counted = m.class_weights and not is_architecture_only()  # (counting parameters reads no dataset)
        weights = class_weights(load_index(index_path(src)), src.train_split, src.label_space) if counted \
            else np.ones(n, np.float32)
        self.weights = torch.from_numpy(weights).to(self.device)
        self.target_weights = None
        if m.ssda_labelled_split:
            t = self.cfg.target
            tw = class_weights(load_index(index_path(t)), m.ssda_labelled_split, t.label_space) if counted \
                else np.ones(n, np.float32)
            self.target_weights = torch.from_numpy(tw).to(self.device)

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
        d = self.source_data() if domain == "source" else self.cfg.target

        def make(frame: Frame, rng: np.random.Generator | None) -> dict[str, Any]:
            return self.make_domain_sample(frame, rng, d, domain)
        return make

    def make_sample(self, frame: Frame, rng: np.random.Generator | None) -> dict[str, Any]:
        return self.make_domain_sample(frame, rng, self.cfg.target, "target")

    def make_domain_sample(self, frame: Frame, rng: np.random.Generator | None, d: DataConfig, domain: str
                           ) -> dict[str, Any]:
        m = self.cfg.model
        cam = frame.cameras.get(self.camera_of(d))
        if cam is None:
            raise ValueError(f"{frame.source}: no camera {self.camera_of(d)!r} (have {sorted(frame.cameras)})")
        size = tuple(d.image_size) if d.image_size else cam.image_size
        image, K = resize_camera(cam.image, cam.K, size)
        n_key = int(frame.meta.get("num_keyframe_points", frame.num_points))
        xyz = frame.points[:n_key, :3]
        proj = project_points(xyz, K, cam.T_cam_lidar, size)
        keep = proj.visible & in_range(xyz, d.point_range)
        labels = (frame.labels[:n_key] if frame.labels is not None
                  else np.full(n_key, self.space.ignore_index, np.int64))
        uv = proj.uv.astype(np.float32)
        if rng is not None:
            if m.bottom_crop and not d.image_size:
                image, uv, size, inside = bottom_crop(image, uv, m.bottom_crop, rng)
                keep &= inside
            keep = subsample(keep, m.max_points, rng)
            xyz = augment_points(xyz, rng, m.augment)
            if m.hflip and rng.random() < 0.5:
                image = image[:, ::-1].copy()
                uv[:, 0] = np.clip(size[0] - uv[:, 0], 0, size[0] - 1e-3)
        # augmentation may move a point off the grid: drop it (the camera pairing is unaffected)
        keep &= in_range(xyz, d.point_range)
        return {"xyz": xyz[keep].astype(np.float32), "uv": uv[keep], "labels": labels[keep], "image": image,
                "raw": np.nonzero(keep)[0], "frame_id": frame.frame_id, "points": n_key}

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
                                    self.sample_maker("target"), c.seed + 1, True)
        return PairedSamples(source, target, c.seed, labelled, with_target=self.uses_target())

    def val_dataset(self) -> Dataset:
        t = self.cfg.target
        return FrameSamples(self.frames_of(t, t.val_split).require_labels(self.name), self.sample_maker("target"),
                            self.cfg.seed, train=False)

    def _domain_batch(self, samples: list[dict[str, Any]], d: DataConfig) -> dict[str, Any]:
        batch = voxel_batch([s["xyz"] for s in samples], [np.ones((len(s["xyz"]), 1), np.float32) for s in samples],
                            d.voxel_size, d.point_range, multiple=2 ** (self.cfg.model.scn_levels - 1))
        # native sizes differ between SemanticKITTI sequences: pad right / bottom (no pixel of a point moves)
        h, w = max(s["image"].shape[0] for s in samples), max(s["image"].shape[1] for s in samples)
        images = np.zeros((len(samples), h, w, 3), samples[0]["image"].dtype)
        for i, s in enumerate(samples):
            images[i, :s["image"].shape[0], :s["image"].shape[1]] = s["image"]
        batch["images"] = torch.from_numpy(images).permute(0, 3, 1, 2)
        batch["point_uv"] = torch.from_numpy(np.concatenate([s["uv"] for s in samples]))
        batch["labels"] = torch.from_numpy(np.concatenate([s["labels"] for s in samples]))
        return batch

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        if "source" in samples[0]:
            source = [s["source"] for s in samples]
            if "target_labelled" in samples[0]:  # SSDA: source and labelled target share one batch, half / half
                source += [s["target_labelled"] for s in samples]
            batch = {"source": self._domain_batch(source, self.source_data())}
            if "target" in samples[0]:
                batch["target"] = self._domain_batch([s["target"] for s in samples], self.cfg.target)
            # per point: 1 where it comes from the labelled target (its own class weights)
            batch["source"]["from_target"] = batch["source"]["point_batch"] >= len(samples)
            return batch
        return self._domain_batch(samples, self.cfg.target)

    # -- steps ----------------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per point: 2D / 3D main and mimicry logits, and the point features of both networks."""
        img = self.nets["net2d"]["backbone"](normalize_images(batch["images"]))
        h, w = img.shape[-2:]
        cols = batch["point_uv"][:, 0].long().clamp(0, w - 1)
        rows = batch["point_uv"][:, 1].long().clamp(0, h - 1)
        f2 = img[batch["point_batch"], :, rows, cols]
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
        if self.target_weights is None:
            losses = {"seg_2d": F.cross_entropy(src["main2d"], y, weight=self.weights, ignore_index=ig),
                      "seg_3d": F.cross_entropy(src["main3d"], y, weight=self.weights, ignore_index=ig)}
        else:  # SSDA: source and labelled-target points, each with their own class weights
            t = batch["source"]["from_target"]
            y_s, y_t = torch.where(t, ig, y), torch.where(t, y, ig)
            losses = {}
            for name, key in (("seg_2d", "main2d"), ("seg_3d", "main3d")):
                losses[name] = sum(F.cross_entropy(src[key], yy, weight=w, ignore_index=ig) if (yy != ig).any()
                                   else src[key].sum() * 0
                                   for yy, w in ((y_s, self.weights), (y_t, self.target_weights)))
        if m.lambda_xm_src:
            losses["xm_src"] = m.lambda_xm_src * self.xm_loss(src)
        if m.lambda_xm_trg and trg is not None:
            losses["xm_trg"] = m.lambda_xm_trg * self.xm_loss(trg)
        if m.lambda_minent and trg is not None:
            ent = sum(-(F.softmax(trg[k], 1) * F.log_softmax(trg[k], 1)).sum(1).mean() for k in ("main2d", "main3d"))
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
        metrics = {f"miou_{k}": cm.all_reduce().miou() for k, cm in cms.items()}
        metrics.update({f"iou_xm_{c}": float(v) for c, v in zip(names, cms["xm"].iou()) if v == v})
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
