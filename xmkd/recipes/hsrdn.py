"""`hsrdn` (and `cmkd`, its ablation without the relation losses): a monocular 3D detector distilled from a
frozen SECOND teacher (a `lidar_det` run) in the teacher's BEV space (METHODS.md section 3).

Losses (each weight in `model.weights`, 0 switches a term off):
- `bev`: 32 * mean((F_student - F_teacher)^2) over the BEV map (optionally weighted by the teacher's foreground);
- response (stage `det` only): QFL of the student's class logits against the teacher's sigmoid scores, smooth-L1
  of the box codes (angle through sin) and direction CE against the teacher's bins, both weighted by the teacher's
  confidence. No ground-truth boxes are needed, so unlabelled frames train too: the `unlabelled` data section
  (e.g. KITTI raw frames, `dataset: kitti_raw`) adds its training split to the labelled one;
- `depth`: focal loss of the LID depth bins against the projected LiDAR depth (cells without a point ignored);
- `distance` / `angle` (HSRDN): relation losses between BEV nodes, teacher detached, nodes inside each sample (the
  teacher's top foreground cells) or, with `relation_nodes: cross`, the released cross-sample form;
- `gt`: the detection losses against ground-truth boxes (the "student trained on ground truth" baseline uses
  only this one and needs no teacher).
`model.stage: bev` trains the BEV-feature stage (bev, depth, relations), `det` everything. Teacher and student see
the same, unaugmented scene (a 3D augmentation would have to move the image with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from xmkd.config import DataConfig
from xmkd.data.dataset import ConcatSamples, FrameSamples
from xmkd.data.frame import Frame
from xmkd.distill.relations import cross_sample_nodes, within_sample_relations
from xmkd.engine.checkpoint import load_module_from_file
from xmkd.errors import XmkdConfigError
from xmkd.geometry.camera import project_points
from xmkd.models.det.frustum import depth_bin_targets
from xmkd.models.det.mono import MonoConfig, MonoDetector, output_stride
from xmkd.models.det.second import Second
from xmkd.models.losses import quality_focal_loss
from xmkd.recipes.lidar_det import LidarDetConfig, LidarDetModel, LidarDetRecipe
from xmkd.recipes.u2mkd import resize_camera


@dataclass
class DistillWeights:
    bev: float = 32.0
    bev_foreground: bool = False  # weight the BEV loss by the teacher's foreground score (+ 1)
    response_cls: float = 1.0
    response_box: float = 1.0
    response_dir: float = 0.2
    depth: float = 0.5
    distance: float = 32.0
    angle: float = 32.0
    gt: float = 0.0


@dataclass
class HSRDNModel(LidarDetModel):
    teacher_checkpoint: str = ""  # a lidar_det run's checkpoint; its `second` config must be this one's
    student: MonoConfig = field(default_factory=MonoConfig)
    stage: str = "det"  # bev | det
    weights: DistillWeights = field(default_factory=DistillWeights)
    relation_nodes: str = "within"  # within | cross
    max_nodes: int = 64
    relation_floor: float = 0.1  # student normalisers >= this x the teacher's mean node distance (0: plain RKD)
    confident: float = 0.3  # teacher score above which an anchor counts in the response normaliser


def _no_unlabelled() -> DataConfig:
    return DataConfig(dataset="kitti_raw", root="", train_split="all", cameras=["image_2"])


@dataclass
class HSRDNConfig(LidarDetConfig):
    recipe: str = "hsrdn"
    model: HSRDNModel = field(default_factory=HSRDNModel)
    # frames without labels trained alongside data.train_split (only `root` non-empty switches it on; the frames
    # are sampled at data.image_size and data.point_range); index "" = <root>/xmkd_index
    unlabelled: DataConfig = field(default_factory=_no_unlabelled)


def focal_ce(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal cross-entropy of (N, C) logits against (N,) class targets."""
    logp = F.log_softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
    return (-(1 - logp.exp()).pow(gamma) * logp).mean()


class HSRDNRecipe(LidarDetRecipe):
    name = "hsrdn"
    schema = HSRDNConfig

    def build(self) -> None:
        super().build()  # the grid checks and a Second in nets["net"], which becomes the teacher
        m = self.cfg.model
        if m.stage not in ("bev", "det"):
            raise XmkdConfigError(f"model.stage: expected bev or det, got {m.stage!r}")
        if m.relation_nodes not in ("within", "cross"):
            raise XmkdConfigError(f"model.relation_nodes: expected within or cross, got {m.relation_nodes!r}")
        if m.relation_floor < 0:
            raise XmkdConfigError(f"model.relation_floor: expected >= 0 (0: plain RKD), got {m.relation_floor}")
        teacher: Second = self.nets.pop("net")
        distils = any(getattr(m.weights, k) for k in ("bev", "response_cls", "response_box", "response_dir",
                                                       "distance", "angle"))
        if self.cfg.unlabelled.root and not (distils or m.weights.depth):
            raise XmkdConfigError("unlabelled.root: frames without labels train only the distillation and depth "
                                  "terms, and every one of them has weight 0 here")
        if distils and not m.teacher_checkpoint:
            raise XmkdConfigError("model.teacher_checkpoint: a trained lidar_det checkpoint is needed for the "
                                  "distillation terms (or set their weights to 0 and weights.gt > 0)")
        bev_grid = (self.grid[1] // 8, self.grid[0] // 8)
        student = MonoDetector(m.student, m.second, teacher.bev.head.num_anchors, len(m.classes),
                               self.cfg.data.point_range, bev_grid)
        if m.teacher_checkpoint:
            load_module_from_file(teacher, m.teacher_checkpoint, key="net")
            student.bev.load_state_dict(teacher.bev.state_dict())  # BEV backbone + head start from the teacher's
            self.nets["teacher"] = teacher.to(self.device)
        self.nets["net"] = student.to(self.device)

    def frozen(self) -> set[str]:
        return {"teacher"} if "teacher" in self.nets else set()

    # -- data -----------------------------------------------------------------------------------------------
    def make_sample(self, frame: Frame, rng: np.random.Generator | None) -> dict:
        sample = super().make_sample(frame, None)  # no 3D augmentation: the image could not follow it
        m, d = self.cfg.model, self.cfg.data
        cam = frame.cameras[m.camera]
        size = tuple(d.image_size) if d.image_size else cam.image_size
        image, K = resize_camera(cam.image, cam.K, size)
        stride = output_stride(m.student)
        fw, fh = math.ceil(size[0] / stride), math.ceil(size[1] / stride)
        proj = project_points(frame.points[:, :3], K, cam.T_cam_lidar, size)
        depth = np.full((fh, fw), np.inf, np.float32)
        cols = (proj.uv[proj.visible, 0] / stride).astype(np.int64).clip(0, fw - 1)
        rows = (proj.uv[proj.visible, 1] / stride).astype(np.int64).clip(0, fh - 1)
        np.minimum.at(depth, (rows, cols), proj.depth[proj.visible].astype(np.float32))  # nearest point per cell
        sample.update(image=image, lidar_to_image=(K @ cam.T_cam_lidar[:3]).astype(np.float32),
                      depth=np.where(np.isfinite(depth), depth, 0).astype(np.float32))
        return sample

    def train_dataset(self) -> FrameSamples | ConcatSamples:
        labelled = super().train_dataset()
        u = self.cfg.unlabelled
        if not u.root:
            return labelled
        unlabelled = FrameSamples(self.frames_of(u, u.train_split), self.make_sample, self.cfg.seed + 1, train=True)
        return ConcatSamples([labelled, unlabelled])

    def collate(self, samples: list[dict]) -> dict:
        batch = super().collate(samples)
        batch["images"] = torch.from_numpy(np.stack([s["image"] for s in samples])).permute(0, 3, 1, 2)
        batch["lidar_to_image"] = torch.from_numpy(np.stack([s["lidar_to_image"] for s in samples]))
        batch["depth"] = torch.from_numpy(np.stack([s["depth"] for s in samples]))
        return batch

    # -- losses ---------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        m, w = self.cfg.model, self.cfg.model.weights
        out = self.nets["net"](batch)
        losses: dict[str, torch.Tensor] = {}
        teacher = None
        if "teacher" in self.nets:
            with torch.no_grad():
                teacher = self.nets["teacher"](batch)
            fg = teacher["cls"].sigmoid().amax(dim=(3, 4))  # (B, ny, nx) teacher foreground score
            if w.bev:
                diff = (out["bev"] - teacher["bev"]).pow(2).mean(1)
                losses["bev"] = w.bev * ((diff * (1 + fg)).mean() if w.bev_foreground else diff.mean())
            if w.distance or w.angle:
                rel = (within_sample_relations(out["bev"], teacher["bev"], fg, m.max_nodes, m.relation_floor)
                       if m.relation_nodes == "within"
                       else cross_sample_nodes(out["bev"], teacher["bev"], m.relation_floor))
                losses["distance"], losses["angle"] = w.distance * rel["distance"], w.angle * rel["angle"]
            if m.stage == "det":
                losses.update(self.response_losses(out, teacher))
        if w.depth:
            target = batch["depth"]
            valid = target > 0
            if valid.any():
                s = m.student
                bins = depth_bin_targets(target[valid], s.depth_min, s.depth_max, s.depth_bins)
                logits = out["depth_logits"].permute(0, 2, 3, 1)[valid]
                losses["depth"] = w.depth * focal_ce(logits, bins)
        if w.gt and m.stage == "det":
            losses.update({f"gt_{k}": w.gt * v for k, v in self.gt_losses(out, batch).items()})
        if not losses:
            raise XmkdConfigError("hsrdn: every loss weight is 0 for this stage")
        return losses

    def response_losses(self, out: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]
                        ) -> dict[str, torch.Tensor]:
        """The student's anchor outputs against the teacher's: no ground truth involved."""
        w = self.cfg.model.weights
        t_prob = teacher["cls"].sigmoid()
        conf = t_prob.amax(-1)  # (B, ny, nx, A)
        norm = (conf >= self.cfg.model.confident).sum().clamp(min=1).to(conf.dtype)
        losses = {"resp_cls": w.response_cls * quality_focal_loss(out["cls"], t_prob) / norm}
        if w.response_box:
            p, t = out["box"], teacher["box"]
            p = torch.cat([p[..., :6], torch.sin(p[..., 6:] - t[..., 6:])], -1)
            t = torch.cat([t[..., :6], torch.zeros_like(t[..., 6:])], -1)
            l1 = F.smooth_l1_loss(p, t, beta=1 / 9, reduction="none").sum(-1)
            losses["resp_box"] = w.response_box * (l1 * conf).sum() / conf.sum().clamp(min=1e-6)
        if w.response_dir:
            ce = F.cross_entropy(out["dir"].reshape(-1, out["dir"].shape[-1]),
                                 teacher["dir"].argmax(-1).reshape(-1), reduction="none")
            losses["resp_dir"] = w.response_dir * (ce * conf.reshape(-1)).sum() / conf.sum().clamp(min=1e-6)
        return losses


class CMKDRecipe(HSRDNRecipe):
    """CMKD: HSRDN's student and distillation without the relation losses (their weights must be 0)."""

    name = "cmkd"

    def build(self) -> None:
        w = self.cfg.model.weights
        if w.distance or w.angle:
            raise XmkdConfigError(f"model.weights: the cmkd recipe has no relation losses (distance {w.distance}, "
                                  f"angle {w.angle}); set them to 0 or use recipe: hsrdn")
        super().build()
