"""`hsrdn` (and `cmkd`, its ablation without the relation losses): a monocular 3D detector distilled from a
frozen SECOND teacher (a `lidar_det` run) in the teacher's BEV space (METHODS.md section 3), as the releases train it
(`pcdet/models/detectors/cmkd.py`, `dense_heads/anchor_head_single_cmkd_v2.py`; docs/hsrdn.md lists each
difference in its Release parity table).

Two stages, chained as released:
- `model.stage: bev` (the release's `*_bev.yaml`): the BEV feature (+ depth, + relations) losses; the student's BEV
  backbone and anchor head (copied from the teacher) take no part: no gradient, no BatchNorm statistics update;
- `model.stage: det` (the release's `*_V2.yaml`): started from a BEV-stage run (`model.student.init=RUN/checkpoints/
  last.pt`), its BEV backbone and head re-copied from the teacher (`model.reset_head`), every term, lr 1e-4.

Losses (each weight in `model.weights`, 0 switches a term off):
- `bev`: 32 * mean((F_student - F_teacher)^2) over the BEV map (optionally weighted by the teacher's foreground);
- response (stage `det` only), against the teacher's outputs, no ground truth: QFL of the student's class logits
  against the teacher's sigmoid scores, normalised per sample and class by the count of teacher scores > 0.1;
  smooth-L1 of the box codes (angle through sin) and direction CE against the teacher's bin, only on anchors whose
  teacher scores sum to > 0.1, each weighted by that sum / the sample's count of such anchors; weights 2 / 2 / 0.4.
  Unlabelled frames therefore train too: the `unlabelled` data section (e.g. KITTI raw frames) adds its split;
- `depth`: focal loss (alpha 0.25, gamma 2) of the LID depth bins against the per-cell depth, over every feature
  cell (cells without a depth target the out-of-range bin), as released; the depth is the mean over the cell's
  pixels of a depth image: the projected LiDAR points' or (`model.depth_maps: depth_2`, the KITTI configs, as
  released) the dataset's depth maps, CaDDN's LiDAR + depth-completion `depth_2` images;
- `distance` / `angle` (HSRDN): relation losses between BEV nodes (xmkd/distill/relations.py), nodes = the
  teacher's top foreground cells inside each sample (score >= `relation_score`) or, with `relation_nodes: cross`,
  the released cross-sample form. As released (`pcdet/models/detectors/cmkd.py:55-89`, which hands the student's
  features to the no-gradient side), they are computed and logged but send no gradient to the student;
  `relation_gradient: true` is xmkd's redesign, in which they train it (HSRDN students trained so did not learn
  on the synthetic benchmark: docs/hsrdn.md, Release parity);
- `gt`: the detection losses against ground-truth boxes (the "student trained on ground truth" baseline uses
  only this one and needs no teacher).
Training frames are flipped left-right with probability 0.5 (image, points and boxes together, as released).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from omegaconf import OmegaConf

from xmkd.config import DataConfig
from xmkd.data.dataset import ConcatSamples, FrameSamples
from xmkd.data.frame import Frame
from xmkd.data.image_flip import HEADINGS, flip_frame
from xmkd.data.index import IndexedFrames
from xmkd.distill.relations import cross_sample_nodes, within_sample_relations
from xmkd.engine.checkpoint import load, load_weights
from xmkd.errors import XmkdConfigError, XmkdDataError
from xmkd.geometry.camera import project_points
from xmkd.io import is_architecture_only
from xmkd.models.det.frustum import cell_depth_histograms, cell_depths, depth_bin_targets
from xmkd.models.det.mono import MonoConfig, MonoDetector, check_mono_config, output_stride
from xmkd.models.det.second import Second
from xmkd.models.image.deeplab import image_weights
from xmkd.models.weights import load_module_from_file, stored_config
from xmkd.recipes.lidar_det import LidarDetConfig, LidarDetModel, LidarDetRecipe, load_second_checkpoint
from xmkd.recipes.u2mkd import resize_camera


@dataclass
class DistillWeights:
    bev: float = 32.0
    bev_foreground: bool = False  # weight the BEV loss by the teacher's foreground score (+ 1)
    response_cls: float = 2.0  # the release's cls_weight
    response_box: float = 2.0  # loc_weight
    response_dir: float = 0.4  # dir_weight
    depth: float = 0.5
    distance: float = 32.0
    angle: float = 32.0
    gt: float = 0.0


@dataclass
class HSRDNModel(LidarDetModel):
    teacher_checkpoint: str = ""  # a lidar_det run's checkpoint; its `second` config must be this one's
    # the teacher's voxels per sample in training / evaluation: the releases' distillation configs cap the teacher
    # at 16,000 / 40,000 (cmkd_kitti_R50_scd_{bev,V2}.yaml MAX_NUMBER_OF_VOXELS), not the teacher's own 20,000
    max_voxels: list[int] = field(default_factory=lambda: [16000, 40000])
    student: MonoConfig = field(default_factory=MonoConfig)
    stage: str = "det"  # bev | det
    reset_head: bool = True  # with student.init: BEV backbone + head re-copied from the teacher (as released)
    weights: DistillWeights = field(default_factory=DistillWeights)
    response_threshold: float = 0.1  # teacher score (per class for cls, summed over classes for box / dir)
    depth_alpha: float = 0.25  # the release's kornia FocalLoss(alpha 0.25, gamma 2)
    depth_gamma: float = 2.0
    depth_cells: str = "all"  # all (as released: cells without LiDAR target the out-of-range bin) | lidar
    depth_target: str = "mean"  # mean (the release's sparse average pooling) | nearest (the nearest point)
    # lidar: the projected LiDAR points' depth image | depth_2: the dataset's depth maps (KITTI: CaDDN's `depth_2`
    # files, LiDAR + depth completion, which the releases read; the KITTI configs use them)
    depth_maps: str = "lidar"
    image_flip: bool = True  # the release's random_image_pc_flip (horizontal, p 0.5), training only
    flip_heading: str = "image"  # image (a box's axis follows the flipped image) | negate (as released: yaw -> -yaw)
    relation_nodes: str = "within"  # within | cross
    # the relation terms train the student (xmkd's redesign); false: computed and logged only, as released
    relation_gradient: bool = False
    max_nodes: int = 64
    relation_score: float = 0.1  # a within-sample node's teacher foreground score must reach this
    relation_floor: float = 0.1  # student normalisers >= this x the teacher's mean node distance (0: plain RKD)


def _no_unlabelled() -> DataConfig:
    return DataConfig(dataset="kitti_raw", root="", train_split="all", cameras=["image_2"])


@dataclass
class HSRDNConfig(LidarDetConfig):
    recipe: str = "hsrdn"
    model: HSRDNModel = field(default_factory=HSRDNModel)
    # frames without labels trained alongside data.train_split (only `root` non-empty switches it on; the frames
    # are sampled at data.image_size and data.point_range); index "" = <root>/xmkd_index
    unlabelled: DataConfig = field(default_factory=_no_unlabelled)


def focal_ce(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Mean softmax focal loss alpha (1 - p_t)^gamma (-log p_t) of (N, C) logits against (N,) class targets (kornia's
    `FocalLoss`, which the releases' depth loss uses)."""
    logp = F.log_softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
    return (-alpha * (1 - logp.exp()).pow(gamma) * logp).mean()


def response_weights(teacher_prob: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """The release's box / direction weight of every anchor (`anchor_head_single_cmkd_v2.py:117-124`): teacher
    probabilities (B, N, classes) -> (B, N) = s * [s > threshold] / (count of such anchors in the sample, >= 1),
    s = the anchor's teacher scores summed over the classes. Zero wherever s <= threshold."""
    total = teacher_prob.sum(-1)
    positive = (total > threshold).to(total.dtype)
    return positive / positive.sum(1, keepdim=True).clamp(min=1.0) * total


def depth_map_pixels(frame: Frame, camera: str, size: tuple[int, int], required: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The valid pixels of the camera's depth map as points of an image resized to `size` (W, H): their centres
    scaled, (N, 2), and depths (N,) metres, for `cell_depths` (at the native size each pixel stays itself, so the
    "mean" targets are the release's `sparse_avg_pooling` of the map). A frame without a map: no pixels, or
    XmkdDataError when `required` (training samples; evaluation reads no depth targets but the oracle's)."""
    cam = frame.cameras[camera]
    if cam.depth is None:
        if not required:
            return np.zeros((0, 2)), np.zeros(0, np.float32)
        raise XmkdDataError(f"model.depth_maps=depth_2, but camera {camera!r} of frame {frame.frame_id} has no depth "
                            "map: only the kitti_object reader provides them (training/depth_2/<id>.png, CaDDN's "
                            "maps); model.depth_maps=lidar computes the targets from the LiDAR points",
                            source=frame.source)
    rows, cols = np.nonzero(cam.depth > 0)
    scale = np.array([size[0] / cam.image_size[0], size[1] / cam.image_size[1]])
    return (np.column_stack([cols, rows]) + 0.5) * scale, cam.depth[rows, cols]


class HSRDNRecipe(LidarDetRecipe):
    name = "hsrdn"
    schema = HSRDNConfig
    gate = "se"  # SCNet gate when model.student.scnet_gate is "" (HSRDN's squeeze-and-excitation)

    def build(self) -> None:
        super().build()  # the grid checks and a Second in nets["net"], which becomes the teacher
        m = self.cfg.model
        choices = {"stage": ("bev", "det"), "relation_nodes": ("within", "cross"), "depth_cells": ("all", "lidar"),
                   "depth_target": ("mean", "nearest"), "depth_maps": ("lidar", "depth_2"), "flip_heading": HEADINGS}
        for key, allowed in choices.items():
            if getattr(m, key) not in allowed:
                raise XmkdConfigError(f"model.{key}: expected one of {allowed}, got {getattr(m, key)!r}")
        if m.relation_floor < 0:
            raise XmkdConfigError(f"model.relation_floor: expected >= 0 (0: plain RKD), got {m.relation_floor}")
        student_cfg = OmegaConf.merge(m.student, {"scnet_gate": m.student.scnet_gate or self.gate})
        try:  # the student's own value checks first, so that the combinations below meet known values only
            check_mono_config(student_cfg)
        except ValueError as err:
            raise XmkdConfigError(str(err)) from None
        if m.student.oracle_bins != "cell" and not m.student.oracle_depth:
            raise XmkdConfigError(f"model.student.oracle_bins: {m.student.oracle_bins!r} is read by an oracle-depth "
                                  "student only; set model.student.oracle_depth=true or leave it 'cell'")
        if m.student.oracle_depth and m.weights.depth:
            raise XmkdConfigError(f"model.weights.depth: {m.weights.depth}, but an oracle-depth student "
                                  "(model.student.oracle_depth) has no depth head to train; set it to 0")
        w = m.weights
        trained = ["bev", "depth", *(["response_cls", "response_box", "response_dir", "gt"] if m.stage == "det"
                                     else [])]
        if (w.distance or w.angle) and not m.relation_gradient and not any(getattr(w, k) for k in trained):
            raise XmkdConfigError(f"model.weights: in stage {m.stage!r} only the relation terms have a weight, and "
                                  "they train nothing unless model.relation_gradient=true (as released they are "
                                  "only logged)")
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
        try:
            student = MonoDetector(student_cfg, m.second, teacher.bev.head.num_anchors, len(m.classes),
                                   self.cfg.data.point_range, bev_grid)
        except ValueError as err:
            raise XmkdConfigError(str(err)) from None
        if m.student.image_pretrained and not is_architecture_only():
            path = m.student.image_pretrained
            state = load(path)
            if "models" in state:
                raise XmkdConfigError(f"model.student.image_pretrained: {path} is an xmkd run checkpoint; start "
                                      "a student from a run with model.student.init")
            resnet, head, _ = image_weights(state.get("state_dict", state), student.backbone, student.depth_head,
                                            str(path))
            load_weights(student.backbone, resnet, f"{path} [backbone]")
            if head is not None:
                load_weights(student.depth_head, head, f"{path} [classifier]")
        if m.teacher_checkpoint:
            if not is_architecture_only():
                self.check_teacher(m.teacher_checkpoint)
                load_second_checkpoint(teacher, m.teacher_checkpoint)  # xmkd's, or an OpenPCDet / CMKD checkpoint
            self.nets["teacher"] = teacher.to(self.device)
        if m.student.init:
            if not is_architecture_only():
                self.check_student_init(m.student.init, student_cfg.scnet_gate)
            load_module_from_file(student, m.student.init, key="net")
        if m.teacher_checkpoint and (m.reset_head or not m.student.init):
            student.bev.load_state_dict(teacher.bev.state_dict())  # BEV backbone + head start from the teacher's
        student.set_head_frozen(m.stage == "bev")
        self.nets["net"] = student.to(self.device)

    @staticmethod
    def run_config(key: str, path: str, recipes: tuple[str, ...], hint: str) -> dict:
        """The config an xmkd checkpoint was trained with ({} for a file without one: an OpenPCDet checkpoint).
        XmkdConfigError naming the config `key` when the file is missing (with `hint`) or is a run of a recipe not
        in `recipes`."""
        if not Path(path).is_file():
            raise XmkdConfigError(f"{key}: {path}: no such checkpoint; {hint}")
        text = stored_config(path)
        trained = yaml.safe_load(text) if text else {}
        if trained.get("recipe") not in (None, *recipes):
            raise XmkdConfigError(f"{key}: {path} is a checkpoint of a {trained['recipe']} run; expected a run of "
                                  f"{' or '.join(recipes)}")
        return trained

    def check_student_init(self, path: str, gate: str) -> None:
        """`model.student.init` is a run of this student: an hsrdn / cmkd run (XmkdConfigError otherwise, or when the
        file is missing: the detection stage starts from the BEV stage) whose SCNet gate is `gate` (HSRDN's SE
        and CMKD's self-calibration gates hold other weights)."""
        trained = self.run_config("model.student.init", path, ("hsrdn", "cmkd"),
                                  "the detection stage starts from a BEV-stage run of this student: train the "
                                  "*_bev config this config's model.student.init names first, or set "
                                  "model.student.init=''")
        defaults = {HSRDNRecipe.name: HSRDNRecipe.gate, CMKDRecipe.name: CMKDRecipe.gate}
        theirs = trained.get("model", {}).get("student", {}).get("scnet_gate") or defaults.get(trained.get("recipe"))
        if theirs and theirs != gate:
            raise XmkdConfigError(f"model.student.init: {path} is a student with SCNet gate {theirs!r} (a "
                                  f"{trained['recipe']} run) and this config's gate is {gate!r}; start from a "
                                  "BEV-stage run of the same student (model.student.scnet_gate sets the gate)")

    def check_teacher(self, path: str) -> None:
        """The teacher checkpoint is a lidar_det run (or an OpenPCDet one) with this config's `model.second`
        network; it is re-voxelised on this config's point range (the student's, as released) but must keep the
        voxel size it was trained on. XmkdConfigError naming the key and both values otherwise."""
        trained = self.run_config("model.teacher_checkpoint", path, ("lidar_det",),
                                  "train the LiDAR teacher first (configs/lidar_det/*.yaml)")
        if not trained:
            return  # an OpenPCDet checkpoint: nothing to compare
        mine = OmegaConf.to_container(self.cfg.model.second)
        theirs = trained.get("model", {}).get("second", {})
        # the network's shape; bn_momentum is how a run trains its BatchNorms, which a student may set otherwise
        if diff := [k for k in mine if k != "bn_momentum" and k in theirs and theirs[k] != mine[k]]:
            raise XmkdConfigError(f"model.second: the teacher {path} was trained with " + ", ".join(
                f"{k}={theirs[k]}" for k in diff) + " and this config has " + ", ".join(
                f"{k}={mine[k]}" for k in diff) + "; the student copies the teacher's BEV network, so they must agree")
        trained = trained.get("data", {})
        for key in ("voxel_size", "voxel_z"):
            mine = getattr(self.cfg.data, key)
            if key in trained and not math.isclose(float(trained[key]), float(mine)):
                raise XmkdConfigError(f"data.{key}: {mine}, but the teacher {path} was trained with {trained[key]}; "
                                      "the teacher is re-voxelised on the student's point range at its own voxel "
                                      "size")

    def frozen(self) -> set[str]:
        return {"teacher"} if "teacher" in self.nets else set()

    # -- data -----------------------------------------------------------------------------------------------
    def camera_use(self, training: bool) -> str:
        return "the student is monocular: it reads the image"

    def frames_of(self, d: DataConfig, split: str, training: bool = False) -> IndexedFrames:
        """`LidarDetRecipe.frames_of`, with the dataset's depth maps (a reader with `depth_maps`: kitti_object's
        depth_2) where `model.depth_maps: depth_2` reads them: training samples, and every sample of an
        oracle-depth student. Elsewhere they are not read (nor paid for, nor checked)."""
        frames = super().frames_of(d, split, training)
        m = self.cfg.model
        if m.depth_maps == "depth_2" and (training or m.student.oracle_depth) and hasattr(frames.reader,
                                                                                           "depth_maps"):
            frames.reader.depth_maps = True
        return frames

    def make_sample(self, frame: Frame, rng: np.random.Generator | None) -> dict:
        m, d = self.cfg.model, self.cfg.data
        if rng is not None and m.image_flip and rng.random() < 0.5:
            frame = flip_frame(frame, m.camera, m.flip_heading)
        # the teacher's 3D augmentation would leave the image behind; as released, the points are not shuffled and
        # the teacher's voxels are capped at the distillation config's MAX_NUMBER_OF_VOXELS (train / test)
        cap = m.max_voxels[0 if rng is not None else 1]
        sample = super().make_sample(frame, None, max_voxels=cap)
        cam = frame.cameras[m.camera]
        size = tuple(d.image_size) if d.image_size else cam.image_size
        image, K = resize_camera(cam.image, cam.K, size)
        if m.depth_maps == "depth_2":
            uv, z = depth_map_pixels(frame, m.camera, size, rng is not None or m.student.oracle_depth)
        else:
            proj = project_points(frame.points[:, :3], K, cam.T_cam_lidar, size)
            uv, z = proj.uv[proj.visible], proj.depth[proj.visible]
        st, stride = m.student, output_stride(m.student)
        depth = cell_depths(uv, z, size, stride, m.depth_target)
        sample.update(image=image, lidar_to_image=(K @ cam.T_cam_lidar[:3]).astype(np.float32), depth=depth)
        if st.oracle_depth and st.oracle_bins == "histogram":
            sample["depth_shares"] = cell_depth_histograms(uv, z, size, stride, st.depth_min, st.depth_max,
                                                           st.depth_bins)
        return sample

    def train_dataset(self) -> FrameSamples | ConcatSamples:
        labelled = super().train_dataset()
        u = self.cfg.unlabelled
        if not u.root:
            return labelled
        labelled.redraw = None  # drawn again from the whole set: the release keeps labelled and raw frames in one
        unlabelled = FrameSamples(self.frames_of(u, u.train_split, training=True), self.make_sample,
                                  self.cfg.seed + 1, train=True)
        return ConcatSamples([labelled, unlabelled], self.redraw(), self.cfg.seed)

    def collate(self, samples: list[dict]) -> dict:
        batch = super().collate(samples)
        batch["images"] = torch.from_numpy(np.stack([s["image"] for s in samples])).permute(0, 3, 1, 2)
        batch["lidar_to_image"] = torch.from_numpy(np.stack([s["lidar_to_image"] for s in samples]))
        batch["depth"] = torch.from_numpy(np.stack([s["depth"] for s in samples]))
        if "depth_shares" in samples[0]:
            batch["depth_shares"] = torch.from_numpy(np.stack([s["depth_shares"] for s in samples]))
        return batch

    # -- losses ---------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        m, w = self.cfg.model, self.cfg.model.weights
        out = self.nets["net"](batch, head=m.stage == "det")
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
                with torch.set_grad_enabled(m.relation_gradient and torch.is_grad_enabled()):
                    rel = (within_sample_relations(out["bev"], teacher["bev"], fg, m.max_nodes, m.relation_floor,
                                                   m.relation_score)
                           if m.relation_nodes == "within"
                           else cross_sample_nodes(out["bev"], teacher["bev"], m.relation_floor))
                losses["distance"], losses["angle"] = w.distance * rel["distance"], w.angle * rel["angle"]
            if m.stage == "det":
                losses.update(self.response_losses(out, teacher))
        if w.depth:
            s = m.student
            bins = depth_bin_targets(batch["depth"], s.depth_min, s.depth_max, s.depth_bins)  # 0 m -> out of range
            cells = torch.ones_like(bins, dtype=torch.bool) if m.depth_cells == "all" else batch["depth"] > 0
            if cells.any():
                logits = out["depth_logits"].permute(0, 2, 3, 1)[cells]
                losses["depth"] = w.depth * focal_ce(logits, bins[cells], m.depth_alpha, m.depth_gamma)
        if w.gt and m.stage == "det":
            losses.update({f"gt_{k}": w.gt * v for k, v in self.gt_losses(out, batch).items()})
        if not losses:
            raise XmkdConfigError("hsrdn: every loss weight is 0 for this stage")
        return losses

    def response_losses(self, out: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]
                        ) -> dict[str, torch.Tensor]:
        """The student's anchor outputs against the teacher's, as `AnchorHeadSingleCMKD_V2.get_loss` computes them
        (no ground truth involved); each term summed over anchors and divided by the batch size."""
        w, threshold = self.cfg.model.weights, self.cfg.model.response_threshold
        b, classes = out["cls"].shape[0], out["cls"].shape[-1]
        s_cls, t_prob = out["cls"].reshape(b, -1, classes), teacher["cls"].sigmoid().reshape(b, -1, classes)
        pos = (t_prob > threshold).sum(1, keepdim=True).clamp(min=1).to(t_prob.dtype)  # per sample and class
        qfl = F.binary_cross_entropy_with_logits(s_cls, t_prob, reduction="none") * (
            s_cls.sigmoid() - t_prob).abs().pow(2)
        losses = {"resp_cls": w.response_cls * (qfl / pos).sum()}
        weight = response_weights(t_prob, threshold)  # (B, N)
        if w.response_box:
            p, t = out["box"].reshape(b, -1, 7), teacher["box"].reshape(b, -1, 7)
            p = torch.cat([p[..., :6], torch.sin(p[..., 6:] - t[..., 6:])], -1)
            t = torch.cat([t[..., :6], torch.zeros_like(t[..., 6:])], -1)
            l1 = F.smooth_l1_loss(p, t, beta=1 / 9, reduction="none").sum(-1)
            losses["resp_box"] = w.response_box * (l1 * weight).sum() / b
        if w.response_dir:
            bins = out["dir"].shape[-1]
            ce = F.cross_entropy(out["dir"].reshape(-1, bins), teacher["dir"].reshape(-1, bins).argmax(-1),
                                 reduction="none")
            losses["resp_dir"] = w.response_dir * (ce * weight.reshape(-1)).sum() / b
        return losses


class CMKDRecipe(HSRDNRecipe):
    """CMKD: HSRDN's student and distillation without the relation losses (their weights must be 0), and SCNet's
    self-calibration gate in place of HSRDN's squeeze-and-excitation one."""

    name = "cmkd"
    gate = "sc"

    def build(self) -> None:
        w = self.cfg.model.weights
        if w.distance or w.angle:
            raise XmkdConfigError(f"model.weights: the cmkd recipe has no relation losses (distance {w.distance}, "
                                  f"angle {w.angle}); set them to 0 or use recipe: hsrdn")
        super().build()
