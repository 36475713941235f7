"""`u2mkd`: the LiDAR + camera student of U2MKD, distilled from a frozen LiDAR teacher (a `lidar_seg` run).

Losses (METHODS.md section 1; release core/nusc_trainers.py:326-358): Seg(point logits) + Seg(pixel logits at
in-view points) [Seg = CE + Lovasz] + w_kl KL(teacher || student) over every student point the teacher also
sees + the C2L imputation learners' MSE + w_feat MSE(adapter(student stage-4 LiDAR features), sg(teacher
stage-4 LiDAR features)) — both the devoxelised stage-4 features before any fusion, without the point-branch
term (release `pts_feats`); the adapter is Linear + BN + ReLU as released, so its output cannot match the
teacher's negative entries (kept: release behaviour). `model.kd=false` gives the LC student without
distillation (same code, no teacher). Teacher and student see independently augmented copies of the same scan,
joined by raw point index (the teacher adds sweeps); the teacher's inputs are x, y, z, intensity (the time lag
only marks its keyframe points) unless `model.teacher.time_lag`. With `model.paste.database` set, instances
are pasted once into the raw keyframe before both inputs are built, so the teacher sees them and the KL covers
them (release lc_semantic_nusc_tsd_full.py:325-336). The student's rotation / scale is applied after
projection, so point <-> pixel pairs stay exact; in training the student keeps the first point of each voxel
(release: one point and one label per voxel), the teacher every point (each gets its voxel's output, as the
release's inverse map gives); a voxel's input feature is its first point's (release `sparse_quantize`;
`model.voxel_feature` / `model.teacher.voxel_feature=mean`: the mean of its points). During training
`model.camera_drop` cameras of every frame are dropped at random (their points count as outside every camera).

Validation: point mIoU over every keyframe point (far ones clipped onto the boundary voxels), pixel mIoU of
the camera head at the projected in-view points, and (with `model.eval_camera_drop = k`) the point mIoU with
the last k cameras dropped.

Label-scarce regime (`model.labelled`, issue 18): only the chosen training frames keep their labels. The
segmentation losses (point and pixel) see only those frames; the KL, the feature imitation and the imputation
MSE see every frame (`model.unlabelled=drop` trains on the labelled frames alone instead). The teacher must have
been trained with labels on no other frame (a `lidar_seg` run with the same `model.labelled`); `build` checks
this against the config stored in the teacher's checkpoint (`model.teacher.check_labels`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from xmkd.config import ExperimentConfig
from xmkd.data.collate import clip_to_range, in_range, voxel_batch
from xmkd.data.dataset import FrameSamples
from xmkd.data.frame import Frame
from xmkd.data.index import IndexedFrames, index_path
from xmkd.data.instances import PasteOptions, paste_for
from xmkd.data.labelled import LabelledFrames, check_no_paste, describe, is_label_scarce, labelled_ids, labelled_only
from xmkd.data.labels import get_label_space
from xmkd.distill.losses import feature_mse, kl_logits
from xmkd.engine.recipe import Recipe, with_point_labels
from xmkd.errors import XmkdConfigError, XmkdDataError
from xmkd.eval.segmentation import ConfusionMatrix
from xmkd.geometry.camera import project_points
from xmkd.io import is_architecture_only
from xmkd.models.image.resnet import normalize_images
from xmkd.models.losses import seg_loss
from xmkd.models.point.sparse_unet import SparseUNet, SparseUNetConfig
from xmkd.models.u2mkd import U2MKDStudent, pixel_logits_at_points
from xmkd.models.weights import load_module_from_file, stored_config
from xmkd.recipes.lidar_seg import (
    Augment,
    augment_points,
    check_voxel_feature,
    first_per_voxel,
    per_class_iou,
    scan_with_pasted,
    subsample,
)


@dataclass
class TeacherConfig:
    checkpoint: str = ""  # a lidar_seg run's checkpoint (its `net` weights)
    backbone: SparseUNetConfig = field(default_factory=lambda: SparseUNetConfig(cr=2.0))
    time_lag: bool = False  # a 5th input channel (the teacher's lidar_seg run must have model.time_lag=true)
    voxel_feature: str = "first"  # as the teacher's lidar_seg run's model.voxel_feature (release: first)
    # release lc_semantic_nusc_tsd_full.py:173-208: rotation, scale U(0.95, 1.05), 4-way flip (= a y-flip under a
    # uniform rotation)
    augment: Augment = field(default_factory=Augment)
    # label-scarce runs: refuse a teacher whose checkpoint config labels a frame the student does not
    check_labels: bool = True


@dataclass
class U2MKDModel:
    backbone: SparseUNetConfig = field(default_factory=SparseUNetConfig)
    image_depth: str = "resnet18"
    image_stem_stride: int = 2  # the release uses 1 (full-resolution conv1)
    image_pretrained: str = ""  # ImageNet state dict file for the ResNet (torchvision/timm names)
    image_input: str = "raw"  # raw: 0..255 floats (release); imagenet: ImageNet mean / std normalised
    decoder_width: int = 128
    # true: the release's pixel head order (decoder features upsampled to the image, then BN-ReLU-1x1); false: the
    # head at the decoder's resolution, then its logits upsampled (128-channel full-resolution maps never held)
    pixel_head_at_image: bool = True
    kd: bool = True
    w_kl: float = 1.0
    w_feat: float = 1.0
    w_pixel: float = 1.0
    w_imputation: float = 1.0
    lovasz_weight: float = 1.0
    temperature: float = 1.0
    camera_drop: int = 3  # cameras dropped at random per training frame
    eval_camera_drop: int = 0  # also report the point mIoU with this many cameras dropped
    max_points: int = 0
    one_point_per_voxel: bool = True  # training: the student keeps the first point of each voxel (release)
    # a voxel's input feature and position: its first point's ("first", release sparse_quantize) or the mean of its
    # points' ("mean"); they differ where a voxel holds several points (evaluation)
    voxel_feature: str = "first"
    # release lc_semantic_nusc_tsd_full.py:398-405: rotation and scale U(0.95, 1.05), no flip
    augment: Augment = field(default_factory=lambda: Augment(flip=False))
    paste: PasteOptions = field(default_factory=PasteOptions)  # instance paste (off in the released configs)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    labelled: LabelledFrames = field(default_factory=LabelledFrames)  # label-scarce: frames that keep labels
    unlabelled: str = "keep"  # label-scarce: "keep" the other training frames (no seg loss) or "drop" them


@dataclass
class U2MKDConfig(ExperimentConfig):
    recipe: str = "u2mkd"
    model: U2MKDModel = field(default_factory=U2MKDModel)


def resize_camera(image: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image to (W, H) and scale its intrinsics to match."""
    h, w = image.shape[:2]
    if (w, h) == tuple(size):
        return image, K
    out = np.asarray(Image.fromarray(image).resize(tuple(size), Image.BILINEAR))
    S = np.diag([size[0] / w, size[1] / h, 1.0])
    return out, S @ K


def labelled_seg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, lovasz_weight: float
                      ) -> dict[str, torch.Tensor]:
    """`seg_loss` over the labelled points of (N, C) logits; zero terms (no gradient) when no point is labelled,
    as in a label-scarce batch of unlabelled frames (cross-entropy over no label would be NaN)."""
    if bool((labels != ignore_index).any()):
        return seg_loss(logits, labels, ignore_index, lovasz_weight)
    zero = logits.sum() * 0.0
    return {"ce": zero, "lovasz": zero} if lovasz_weight else {"ce": zero}


class U2MKDRecipe(Recipe):
    name = "u2mkd"
    schema = U2MKDConfig
    _labelled: frozenset[str] | None = None  # cache of labelled_training_ids()

    @property
    def distill(self) -> bool:
        """Whether a teacher takes part (it then needs its own sample of every frame)."""
        return bool(self.cfg.model.kd)

    def build(self) -> None:
        m = self.cfg.model
        self.space = get_label_space(self.cfg.data.label_space)
        if m.image_input not in ("raw", "imagenet"):
            raise XmkdConfigError(f"model.image_input: {m.image_input!r} is not one of raw, imagenet")
        check_voxel_feature(m.voxel_feature)
        check_voxel_feature(m.teacher.voxel_feature, "model.teacher.voxel_feature")
        student = U2MKDStudent(4, self.space.num_classes, m.backbone, m.image_depth, m.image_stem_stride,
                               m.decoder_width, m.image_pretrained, m.pixel_head_at_image)
        self.nets["student"] = student.to(self.device)
        check_no_paste(m.labelled, m.paste.database)
        if m.unlabelled not in ("keep", "drop"):
            raise XmkdConfigError(f"model.unlabelled: {m.unlabelled!r} is not 'keep' or 'drop'")
        self.paste = paste_for(self.space, m.paste)
        if self.distill:
            if not m.teacher.checkpoint and not is_architecture_only():
                raise XmkdConfigError("model.teacher.checkpoint: a trained lidar_seg checkpoint is required when "
                                      "model.kd=true")
            teacher = SparseUNet(5 if m.teacher.time_lag else 4, self.space.num_classes, m.teacher.backbone)
            load_module_from_file(teacher, m.teacher.checkpoint, key="net")
            self.nets["teacher"] = teacher.to(self.device)
            self.nets["adapter"] = nn.Sequential(
                nn.Linear(student.lidar.widths[4], teacher.widths[4]), nn.BatchNorm1d(teacher.widths[4]),
                nn.ReLU(inplace=True)).to(self.device)
            if is_label_scarce(m.labelled) and m.teacher.check_labels:
                self.check_teacher_labels()

    def frozen(self) -> set[str]:
        return {"teacher"} if "teacher" in self.nets else set()

    # -- label-scarce regime --------------------------------------------------------------------------------
    def labelled_training_ids(self) -> frozenset[str] | None:
        """Ids of the training frames that keep their labels under `model.labelled` (None: every frame)."""
        m = self.cfg.model
        if not is_label_scarce(m.labelled):
            return None
        if self._labelled is None:
            self._labelled = labelled_ids([r["id"] for r in self.frames(self.cfg.data.train_split).records],
                                          m.labelled)
        return self._labelled

    def check_teacher_labels(self) -> None:
        """Raise XmkdConfigError unless the teacher checkpoint's run had labels on no training frame beyond the
        student's. The teacher's frames are read from the config its checkpoint stores (`model.labelled` and
        `data.train_split`, looked up in this run's index); a checkpoint without a config cannot be checked."""
        m = self.cfg.model
        path = m.teacher.checkpoint
        stored = stored_config(path)
        fix = ("train the teacher (lidar_seg) with the same model.labelled, or set model.teacher.check_labels=false "
               "to distil from it anyway")
        if not stored:
            raise XmkdConfigError(f"{path}: the checkpoint holds no config, so the frames its teacher was trained on "
                                  f"are unknown; {fix}")
        t_cfg = OmegaConf.create(stored)
        t_opts = OmegaConf.select(t_cfg, "model.labelled") or OmegaConf.structured(LabelledFrames)
        t_split = OmegaConf.select(t_cfg, "data.train_split") or self.cfg.data.train_split
        splits = self.frames(self.cfg.data.train_split).index["split_ids"]
        if t_split not in splits:
            raise XmkdConfigError(f"{path}: the teacher trained on split {t_split!r}, which this run's index does "
                                  f"not hold (it has {sorted(splits)}); {fix}")
        mine = self.labelled_training_ids() or frozenset()
        extra = labelled_ids(splits[t_split], t_opts, f"{path}: model.labelled") - mine
        if extra:
            raise XmkdConfigError(
                f"{path}: the teacher was trained with labels on {len(extra)} frame(s) the student has no label for, "
                f"e.g. {sorted(extra)[:3]} (teacher: {describe(t_opts)} of {t_split!r}; student: "
                f"{describe(m.labelled)}); {fix}")

    # -- data -----------------------------------------------------------------------------------------------
    def frames(self, split: str) -> IndexedFrames:
        d = self.cfg.data
        if d.cameras == []:
            raise XmkdConfigError(f"{self.name} needs cameras: data.cameras is [] (none); set it to null (every "
                                  "camera) or list the cameras")
        return IndexedFrames(index_path(d), split, d.label_space, cameras=d.cameras,
                             sweeps=d.sweeps if self.distill else 0, root=d.root).require_cameras(self.name)

    def make_sample(self, frame: Frame, rng: np.random.Generator | None) -> dict:
        if not frame.cameras:
            raise XmkdDataError(f"no camera; {self.name} trains on labelled frames with cameras", source=frame.source)
        frame = with_point_labels(frame, rng, self.name, self.space.ignore_index)
        m, d = self.cfg.model, self.cfg.data
        n_key = int(frame.meta.get("num_keyframe_points", frame.num_points))
        # [keyframe, sweeps, pasted] (pasted only in training): both networks' inputs are built from this cloud
        all_xyz, all_i, all_labels, all_lag = scan_with_pasted(frame, self.paste, rng)
        student = np.concatenate([np.arange(n_key), np.arange(frame.num_points, len(all_xyz))])
        n_paste = len(student) - n_key
        key_xyz, key_i, labels = all_xyz[student], all_i[student], all_labels[student]
        names = sorted(frame.cameras)
        if rng is not None and m.camera_drop:
            kept = sorted(rng.choice(len(names), max(1, len(names) - m.camera_drop), replace=False).tolist())
            names = [names[i] for i in kept]
        # pasted instances lie outside every camera
        images, point_cam, point_uv = [], np.full(len(student), -1, np.int64), np.zeros((len(student), 2), np.float32)
        for j, name in enumerate(names):
            cam = frame.cameras[name]
            size = tuple(d.image_size) if d.image_size else cam.image_size
            image, K = resize_camera(cam.image, cam.K, size)
            proj = project_points(key_xyz[:n_key], K, cam.T_cam_lidar, size)
            new = proj.visible & (point_cam[:n_key] < 0)  # a point seen by several cameras uses the first
            point_cam[:n_key][new] = j
            point_uv[:n_key][new] = proj.uv[new]
            images.append(image)
        if rng is not None and frame.frame_id not in (self.labelled_training_ids() or {frame.frame_id}):
            labels = np.full_like(labels, self.space.ignore_index)  # label-scarce: an unlabelled training frame
        if rng is None:  # evaluation: every keyframe point, far ones on the boundary voxels
            xyz = clip_to_range(key_xyz, d.point_range, d.voxel_size)
            keep = np.ones(len(xyz), bool)
        else:
            xyz = augment_points(key_xyz, rng, m.augment)
            keep = subsample(in_range(xyz, d.point_range), m.max_points, rng)
            if m.one_point_per_voxel:
                keep = first_per_voxel(xyz, keep, d.voxel_size, d.point_range)
        sample = {"xyz": xyz[keep], "features": np.column_stack([xyz[keep], key_i[keep]]), "labels": labels[keep],
                  "raw": np.nonzero(keep)[0], "images": np.stack(images), "point_cam": point_cam[keep],
                  "point_uv": point_uv[keep]}
        if self.distill:
            t_rng = np.random.default_rng(rng.integers(1 << 62)) if rng is not None else None
            t_xyz = augment_points(all_xyz, t_rng, m.teacher.augment) if t_rng is not None else all_xyz
            t_keep = in_range(t_xyz, d.point_range)
            feats = [t_xyz[t_keep], all_i[t_keep, None]]
            if m.teacher.time_lag:
                feats.append(all_lag[t_keep, None])
            raw = np.full(len(all_xyz), -1)  # the student's index of each teacher point (-1: a sweep point)
            raw[:n_key] = np.arange(n_key)
            raw[frame.num_points:] = n_key + np.arange(n_paste)
            sample.update(t_xyz=t_xyz[t_keep], t_features=np.column_stack(feats).astype(np.float32), t_raw=raw[t_keep])
        return sample

    def train_dataset(self) -> FrameSamples:
        """The training split. Label-scarce: the unlabelled frames lose their labels in `make_sample`
        (`model.unlabelled=keep`) or are left out (`drop`)."""
        m = self.cfg.model
        frames = self.frames(self.cfg.data.train_split).require_labels(self.name)
        if m.unlabelled == "drop":
            frames = labelled_only(frames, m.labelled, "u2mkd with model.unlabelled=drop")
        return FrameSamples(frames, self.make_sample, self.cfg.seed, train=True)

    def val_dataset(self) -> FrameSamples:
        return FrameSamples(self.frames(self.cfg.data.val_split).require_labels(self.name), self.make_sample,
                            self.cfg.seed, train=False)

    def collate(self, samples: list[dict]) -> dict:
        d = self.cfg.data
        student = voxel_batch([s["xyz"] for s in samples], [s["features"].astype(np.float32) for s in samples],
                              d.voxel_size, d.point_range, voxel_feature=self.cfg.model.voxel_feature)
        offsets = np.cumsum([0] + [len(s["images"]) for s in samples[:-1]])
        student["images"] = torch.from_numpy(np.concatenate([s["images"] for s in samples])).permute(0, 3, 1, 2)
        student["point_image"] = torch.from_numpy(np.concatenate(
            [np.where(s["point_cam"] >= 0, s["point_cam"] + o, -1) for s, o in zip(samples, offsets)]))
        student["point_uv"] = torch.from_numpy(np.concatenate([s["point_uv"] for s in samples]))
        student["image_slot"] = torch.from_numpy(np.concatenate([np.arange(len(s["images"])) for s in samples]))
        student["image_sample"] = torch.from_numpy(np.concatenate([np.full(len(s["images"]), i)
                                                                   for i, s in enumerate(samples)]))
        batch = {"student": student, "labels": torch.from_numpy(np.concatenate([s["labels"] for s in samples]))}
        if "t_xyz" in samples[0]:
            batch["teacher"] = voxel_batch([s["t_xyz"] for s in samples], [s["t_features"] for s in samples],
                                           d.voxel_size, d.point_range,
                                           voxel_feature=self.cfg.model.teacher.voxel_feature)
            kd_index, t_offset = [], 0
            for s in samples:
                lookup = np.full(int(max(s["raw"].max(initial=0), s["t_raw"].max(initial=0))) + 1, -1, np.int64)
                key = s["t_raw"] >= 0
                lookup[s["t_raw"][key]] = np.nonzero(key)[0] + t_offset
                kd_index.append(lookup[s["raw"]])
                t_offset += len(s["t_xyz"])
            batch["kd_index"] = torch.from_numpy(np.concatenate(kd_index))
        return batch

    # -- steps ----------------------------------------------------------------------------------------------
    def _forward(self, student_batch: dict) -> dict:
        sb = dict(student_batch)
        sb["images"] = normalize_images(sb["images"]) if self.cfg.model.image_input == "imagenet" else \
            sb["images"].float()
        return self.nets["student"](sb)

    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        m = self.cfg.model
        ignore = self.space.ignore_index
        out = self._forward(batch["student"])
        labels = batch["labels"]
        losses = labelled_seg_loss(out["point_logits"], labels, ignore, m.lovasz_weight)
        pix, vis = pixel_logits_at_points(out["pixel_logits"], batch["student"]["point_image"],
                                          batch["student"]["point_uv"])
        for k, v in labelled_seg_loss(pix, labels[vis], ignore, m.lovasz_weight).items():
            losses[f"pixel_{k}"] = m.w_pixel * v
        losses["imputation"] = m.w_imputation * out["imputation"]
        if self.distill:
            with torch.no_grad():
                t_out = self.nets["teacher"](batch["teacher"])
            idx = batch["kd_index"]
            sel = idx >= 0
            losses["kl"] = m.w_kl * kl_logits(out["point_logits"][sel], t_out["logits"][idx[sel]], m.temperature)
            losses["feat"] = m.w_feat * feature_mse(self.nets["adapter"](out["stage4"][sel]),
                                                    t_out["stage4"][idx[sel]])
        return losses

    @staticmethod
    def drop_cameras(student: dict, k: int) -> dict:
        """The batch with the last k cameras of every sample removed (their points: in no camera)."""
        slot, sample = student["image_slot"], student["image_sample"]
        per_sample = torch.bincount(sample)
        keep = slot < (per_sample[sample] - k).clamp(min=1)
        new_index = torch.cumsum(keep.long(), 0) - 1
        pim = student["point_image"]
        visible = pim >= 0
        remapped = torch.full_like(pim, -1)
        remapped[visible] = torch.where(keep[pim[visible]], new_index[pim[visible]], torch.full_like(pim[visible], -1))
        out = dict(student)
        out.update(images=student["images"][keep], point_image=remapped, image_slot=slot[keep],
                   image_sample=sample[keep])
        return out

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        return self._forward(batch["student"])["point_logits"].argmax(1)

    @torch.no_grad()
    def validate(self, batches: Iterable[dict]) -> dict[str, float]:
        n, ig, names = self.space.num_classes, self.space.ignore_index, self.space.class_names
        point_cm, pixel_cm, drop_cm = ConfusionMatrix(n, ig, names), ConfusionMatrix(n, ig, names), \
            ConfusionMatrix(n, ig, names)
        k = self.cfg.model.eval_camera_drop
        for batch in batches:
            out = self._forward(batch["student"])
            point_cm.update(out["point_logits"].argmax(1), batch["labels"])
            pix, vis = pixel_logits_at_points(out["pixel_logits"], batch["student"]["point_image"],
                                              batch["student"]["point_uv"])
            pixel_cm.update(pix.argmax(1), batch["labels"][vis])
            if k:
                dropped = self._forward(self.drop_cameras(batch["student"], k))
                drop_cm.update(dropped["point_logits"].argmax(1), batch["labels"])
        metrics = {"miou": point_cm.all_reduce().miou(), "accuracy": point_cm.accuracy(),
                   "pixel_miou": pixel_cm.all_reduce().miou(), **per_class_iou(point_cm)}
        if k:
            metrics[f"miou_drop{k}"] = drop_cm.all_reduce().miou()
        return metrics
