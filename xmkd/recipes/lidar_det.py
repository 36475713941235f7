"""`lidar_det`: SECOND on KITTI-format data — the LiDAR teacher of CMKD / HSRDN (METHODS.md section 3).

Input: the points inside the front camera's view (KITTI convention), x, y, z, reflectance, voxelised on
`data.voxel_size` x `data.voxel_size` x `data.voxel_z` over `data.point_range` (voxel feature = mean of its first
`max_points_per_voxel` points, at most `max_voxels` voxels, as OpenPCDet's voxel generator). Training augmentation,
in the release's order: gt-sampling from a box database (`xmkd.data.gt_database`), y-flip, rotation about z, global
scale; boxes with no corner inside the point range are dropped, and a scene left without boxes is replaced by a
random other one (`model.redraw_empty`, as released). Loss: CMKD's IoU-aware quality focal loss on all
anchors' class logits (weight 8), smooth-L1 box codes (angle through sin), direction bins. Validation writes KITTI
prediction files (in the run folder) and scores them with xmkd's KITTI evaluator against the dataset's label
files; `xmkd infer` writes them for any split. Settings: CMKD's tools/cfgs/kitti_models/CMKD/CMKD-scd/
second_teacher.yaml and tools/cfgs/dataset_configs/kitti_dataset.yaml (docs/hsrdn.md, "Release parity").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmkd.config import DataConfig, ExperimentConfig
from xmkd.data.collate import in_range, voxel_batch
from xmkd.data.dataset import FrameSamples
from xmkd.data.frame import Frame
from xmkd.data.gt_database import GTSampler, GTSamplingConfig, sampler_for
from xmkd.data.index import IndexedFrames, index_path
from xmkd.engine import distributed
from xmkd.engine.checkpoint import load, load_weights
from xmkd.engine.recipe import Recipe
from xmkd.errors import XmkdConfigError, XmkdDataError
from xmkd.eval.kitti import evaluate_folders
from xmkd.geometry.boxes import box_corners, lidar_to_kitti_camera, project_boxes_to_image, rotation_y_to_alpha
from xmkd.geometry.camera import project_points
from xmkd.io import atomic_write_text
from xmkd.models.det.anchors import KITTI_ANCHORS, AnchorClass, anchor_classes, generate_anchors
from xmkd.models.det.release_ckpt import convert_release_state
from xmkd.models.det.second import Second, SecondConfig
from xmkd.models.det.targets import ASSIGN_IOU, assign, decode_predictions, detection_losses
from xmkd.recipes.lidar_seg import subsample


@dataclass
class DetAugment:
    flip: bool = True  # mirror y
    rotate: float = math.pi / 4  # uniform rotation about z in [-rotate, rotate]
    scale: list[float] = field(default_factory=lambda: [0.95, 1.05])
    gt_sampling: GTSamplingConfig = field(default_factory=GTSamplingConfig)  # first, before the three above


@dataclass
class LidarDetModel:
    second: SecondConfig = field(default_factory=SecondConfig)
    classes: list[AnchorClass] = field(default_factory=lambda: list(KITTI_ANCHORS))
    init_checkpoint: str = ""  # start from these weights: an xmkd lidar_det checkpoint or an OpenPCDet / CMKD one
    fov_only: bool = True  # keep the points inside the front camera's image
    camera: str = "image_2"
    max_points: int = 0  # training: subsample to this many points (0 = all)
    max_points_per_voxel: int = 5  # the voxel feature averages a voxel's first points only (0 = all)
    max_voxels: list[int] = field(default_factory=lambda: [20000, 40000])  # training, evaluation (0 = no limit)
    augment: DetAugment = field(default_factory=DetAugment)
    redraw_empty: bool = True  # a training scene left without boxes is replaced by a random other one (as released)
    assign_iou: str = "nearest_bev"  # nearest_bev (released: nearest-axis BEV IoU) | rotated
    cls_weight: float = 8.0
    box_weight: float = 2.0
    dir_weight: float = 0.2
    score_threshold: float = 0.1
    nms_threshold: float = 0.01
    max_detections: int = 500  # kept per frame after NMS (OpenPCDet NMS_POST_MAXSIZE); at least 1


@dataclass
class LidarDetConfig(ExperimentConfig):
    recipe: str = "lidar_det"
    model: LidarDetModel = field(default_factory=LidarDetModel)


def augment_scene(xyz: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, aug: DetAugment
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The same global flip / rotation / scale applied to points (N, 3) and LiDAR boxes (M, 7)."""
    xyz, boxes = xyz.astype(np.float64).copy(), boxes.astype(np.float64).copy()
    if aug.flip and rng.random() < 0.5:
        xyz[:, 1] *= -1
        boxes[:, 1] *= -1
        boxes[:, 6] *= -1
    a = rng.uniform(-aug.rotate, aug.rotate)
    c, s = math.cos(a), math.sin(a)
    rot = np.array([[c, -s], [s, c]])
    xyz[:, :2] = xyz[:, :2] @ rot.T
    boxes[:, :2] = boxes[:, :2] @ rot.T
    boxes[:, 6] += a
    k = rng.uniform(*aug.scale)
    xyz *= k
    boxes[:, :6] *= k
    return xyz.astype(np.float32), boxes.astype(np.float32)


def boxes_in_range(boxes: np.ndarray, point_range: list[float]) -> np.ndarray:
    """(M,) bool: at least one of a LiDAR box's (M, 7) 8 corners lies inside the range (bounds included)
    [OpenPCDet: pcdet/utils/box_utils.py mask_boxes_outside_range_numpy, min_num_corners=1]."""
    if len(boxes) == 0:
        return np.zeros(0, bool)
    corners = box_corners(boxes.astype(np.float64))  # (M, 8, 3)
    lo, hi = np.asarray(point_range[:3]), np.asarray(point_range[3:])
    return ((corners >= lo) & (corners <= hi)).all(-1).any(-1)


def cap_voxels(xyz: np.ndarray, voxel: list[float], point_range: list[float], max_per_voxel: int, max_voxels: int,
               rng: np.random.Generator | None) -> np.ndarray:
    """Indices of the points (N, 3), all in range, that OpenPCDet's voxel generator keeps: it walks the points (in
    a random order when training: the release shuffles them first), opens voxels until `max_voxels` are open and
    keeps the first `max_per_voxel` points of each [OpenPCDet: pcdet/datasets/processor/data_processor.py
    shuffle_points, transform_points_to_voxels]. 0 switches a limit off."""
    order = rng.permutation(len(xyz)) if rng is not None else np.arange(len(xyz))
    if not len(xyz) or not (max_per_voxel or max_voxels):
        return order
    cell = np.floor((xyz[order] - np.asarray(point_range[:3])) / np.asarray(voxel)).astype(np.int64)
    _, first, inverse = np.unique(cell, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))  # voxels by the point that opened them
    keep = np.ones(len(order), bool)
    if max_voxels:
        keep &= rank[inverse] < max_voxels
    if max_per_voxel:
        by_voxel = np.argsort(inverse, kind="stable")  # the walk order within each voxel
        starts = np.searchsorted(inverse[by_voxel], inverse[by_voxel])
        position = np.empty(len(order), np.int64)
        position[by_voxel] = np.arange(len(order)) - starts
        keep &= position < max_per_voxel
    return order[keep]


def left_without_boxes(sample: dict) -> bool:
    """A labelled sample with no box left (none of the model's classes inside the point range, after augmentation):
    the scene OpenPCDet's training `prepare_data` replaces by a random other one (`model.redraw_empty`)."""
    return bool(sample["labelled"]) and len(sample["boxes"]) == 0


def load_second_checkpoint(model: Second, path: str | Path) -> str:
    """Weights of a SECOND teacher from an xmkd checkpoint (its "net") or one saved by OpenPCDet / CMKD / HSRDN (its
    "model_state", names mapped by `convert_release_state`); returns "xmkd" or "openpcdet"."""
    ckpt = load(path)
    if "model_state" in ckpt:
        load_weights(model, convert_release_state(ckpt["model_state"], model, str(path)), str(path))
        return "openpcdet"
    if "net" not in ckpt.get("models", {}):
        raise XmkdConfigError(f"{path}: neither an xmkd lidar_det checkpoint (models: "
                              f"{sorted(ckpt.get('models', {}))}) nor an OpenPCDet one (no 'model_state')")
    load_weights(model, ckpt["models"]["net"], f"{path} [net]")
    return "xmkd"


def kitti_lines(boxes: np.ndarray, scores: np.ndarray, names: list[str], meta: dict[str, Any]) -> list[str]:
    """KITTI `label_2` prediction lines (16 columns, with the score) for LiDAR boxes; boxes whose centre falls
    outside the image are dropped, as the benchmark only scores the camera's view."""
    if len(boxes) == 0:
        return []
    cam = lidar_to_kitti_camera(boxes.astype(np.float64), meta["T_rect_lidar"])
    bbox, front = project_boxes_to_image(boxes, meta["K"], meta["T_cam_lidar"], meta["image_size"])
    centre = project_points(boxes[:, :3].astype(np.float64), meta["K"], meta["T_cam_lidar"], meta["image_size"])
    lines = []
    for i in np.nonzero(front & centre.visible)[0]:
        x, y, z, h, w, l, ry = cam[i]
        ry = math.atan2(math.sin(ry), math.cos(ry))
        alpha = float(rotation_y_to_alpha(ry, x, z))
        x1, y1, x2, y2 = bbox[i]
        lines.append(f"{names[i]} -1 -1 {alpha:.4f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} {h:.4f} {w:.4f} {l:.4f} "
                     f"{x:.4f} {y:.4f} {z:.4f} {ry:.4f} {scores[i]:.4f}")
    return lines


class LidarDetRecipe(Recipe):
    name = "lidar_det"
    schema = LidarDetConfig

    @property
    def voxel(self) -> list[float]:
        d = self.cfg.data
        return [d.voxel_size, d.voxel_size, d.voxel_z or d.voxel_size]

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.cfg.model.classes]

    def build(self) -> None:
        d, m = self.cfg.data, self.cfg.model
        grid = [round((d.point_range[i + 3] - d.point_range[i]) / v) for i, v in enumerate(self.voxel)]
        if any(g % 8 for g in grid[:2]):
            raise XmkdConfigError(f"data.point_range / voxel size gives a {grid[0]} x {grid[1]} BEV grid; SECOND "
                                  "needs multiples of 8")
        self.grid = grid
        if m.assign_iou not in ASSIGN_IOU:
            raise XmkdConfigError(f"model.assign_iou: expected one of {', '.join(ASSIGN_IOU)}, got {m.assign_iou!r}")
        extra = set(m.augment.gt_sampling.sample_groups) - set(self.class_names)
        if m.augment.gt_sampling.enabled and extra:
            raise XmkdConfigError(f"model.augment.gt_sampling.sample_groups: {sorted(extra)} are not among the "
                                  f"model's classes {self.class_names}")
        if len(m.max_voxels) != 2:
            raise XmkdConfigError(f"model.max_voxels: expected [training, evaluation], got {list(m.max_voxels)}")
        if m.max_detections < 1:  # unlike the voxel caps, 0 is not "no limit": it would keep no box
            raise XmkdConfigError(f"model.max_detections: boxes kept per frame, at least 1; got {m.max_detections}")
        self._sampler: GTSampler | None = None
        num_anchors = sum(len(c.rotations) for c in m.classes)
        net = Second(4, num_anchors, len(m.classes), grid[2], m.second)
        if m.init_checkpoint:
            load_second_checkpoint(net, m.init_checkpoint)
        self.nets["net"] = net.to(self.device)
        self._anchors: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def anchors(self, ny: int, nx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat anchors (ny * nx * A, 7) of a BEV map and each one's class."""
        if (ny, nx) not in self._anchors:
            m = self.cfg.model
            a = generate_anchors(m.classes, (ny, nx), self.cfg.data.point_range, self.device).reshape(-1, 7)
            self._anchors[(ny, nx)] = (a, anchor_classes(m.classes).to(self.device).repeat(ny * nx))
        return self._anchors[(ny, nx)]

    # -- data -----------------------------------------------------------------------------------------------
    def frames(self, split: str, training: bool = False) -> IndexedFrames:
        return self.frames_of(self.cfg.data, split, training)

    def frames_of(self, d: DataConfig, split: str, training: bool = False) -> IndexedFrames:
        """A split of the dataset of data section `d`, with the model's camera where it is needed (`camera_use`;
        `training`: for training samples); without it (LiDAR only: an index prepared with --cameras none is fine)
        elsewhere."""
        why = self.camera_use(training)
        cameras = [self.cfg.model.camera] if why else []
        return IndexedFrames(index_path(d), split, None, cameras=cameras, root=d.root,
                             why_cameras=f"{self.name} needs camera {self.cfg.model.camera!r}: {why}" if why else "")

    def camera_use(self, training: bool) -> str:
        """What the model's camera is needed for ("" when nothing needs it: training samples with
        model.fov_only=false)."""
        if self.cfg.model.fov_only:
            return "model.fov_only=true keeps only the points inside its image (set it false for LiDAR only)"
        if not training:
            return ("validation and `xmkd infer` write KITTI prediction files, whose 2D boxes (and the camera-view "
                    "filter the KITTI benchmark scores) come from its projection")
        return ""

    def make_sample(self, frame: Frame, rng: np.random.Generator | None, *, max_voxels: int | None = None) -> dict:
        """The teacher's sample of a frame: augmented (gt-sampling, flip, rotation, scale) and its points shuffled
        when `rng` is given; at most `max_voxels` voxels (None: model.max_voxels[0] with `rng`, [1] without)."""
        m, d = self.cfg.model, self.cfg.data
        if max_voxels is None:
            max_voxels = m.max_voxels[0 if rng is not None else 1]
        cam = frame.cameras.get(m.camera)
        if cam is None and (m.fov_only or rng is None):  # frames_of asked for it then; a frame without it is bad
            raise XmkdDataError(f"lidar_det needs camera {m.camera!r}: {self.camera_use(rng is not None)}",
                                source=frame.source)
        xyz, intensity = frame.points[:, :3], frame.field("intensity")
        if m.fov_only:
            # in front of the camera at any depth, as the release's get_fov_flag (depth >= 0), not xmkd's 1 m default
            seen = project_points(xyz, cam.K, cam.T_cam_lidar, cam.image_size, min_depth=0.0).visible
            xyz, intensity = xyz[seen], intensity[seen]
        if frame.boxes is not None and len(frame.boxes):
            boxes, names = frame.boxes.boxes.astype(np.float32), frame.boxes.names
        else:
            boxes, names = np.zeros((0, 7), np.float32), np.zeros(0, str)
        if rng is not None and self.gt_sampler() is not None:  # every box of the scene counts for collisions
            pts, boxes, names = self.gt_sampler()(np.column_stack([xyz, intensity]).astype(np.float32), boxes, names,
                                                  rng, frame.meta.get("road_plane"), frame.meta.get("T_rect_lidar"))
            xyz, intensity = pts[:, :3], pts[:, 3]
        class_names = self.class_names  # (a property that reads the config: once, not per box)
        known = np.isin(names, class_names)
        boxes = boxes[known]
        labels = np.array([class_names.index(n) for n in names[known]], np.int64)
        if rng is not None:
            xyz, boxes = augment_scene(xyz, boxes, rng, m.augment)
        keep = np.nonzero(in_range(xyz, d.point_range))[0]
        keep = keep[cap_voxels(xyz[keep], self.voxel, d.point_range, m.max_points_per_voxel, max_voxels, rng)]
        if rng is not None and m.max_points:
            keep = keep[subsample(np.ones(len(keep), bool), m.max_points, rng)]
        inside = boxes_in_range(boxes, d.point_range)
        meta = {"frame_id": frame.frame_id, "K": None if cam is None else cam.K,  # no camera: LiDAR-only training
                "T_cam_lidar": None if cam is None else cam.T_cam_lidar,
                "T_rect_lidar": frame.meta.get("T_rect_lidar", None if cam is None else cam.T_cam_lidar),
                "image_size": None if cam is None else cam.image_size}
        return {"xyz": xyz[keep], "features": np.column_stack([xyz[keep], intensity[keep]]).astype(np.float32),
                "boxes": boxes[inside], "labels": labels[inside], "labelled": frame.boxes is not None, "meta": meta}

    def gt_sampler(self) -> GTSampler | None:
        """The gt-sampling transform (None when off), built on first use, in each data-loading process."""
        if self._sampler is None and self.cfg.model.augment.gt_sampling.enabled:
            self._sampler = sampler_for(self.cfg.model.augment.gt_sampling, self.cfg.data.root)
        return self._sampler

    def train_dataset(self) -> FrameSamples:
        return FrameSamples(self.frames(self.cfg.data.train_split, training=True).require_labels(self.name, "boxes"),
                            self.make_sample, self.cfg.seed, train=True, redraw=self.redraw())

    def redraw(self) -> Callable[[dict], bool] | None:
        """Which training samples are drawn again (`xmkd.data.dataset.redrawn`): scenes left without boxes, unless
        model.redraw_empty is off."""
        return left_without_boxes if self.cfg.model.redraw_empty else None

    def val_dataset(self) -> FrameSamples:
        return FrameSamples(self.frames(self.cfg.data.val_split).require_labels(self.name, "boxes"),
                            self.make_sample, self.cfg.seed, train=False)

    def collate(self, samples: list[dict]) -> dict:
        batch = voxel_batch([s["xyz"] for s in samples], [s["features"] for s in samples], self.voxel,
                            self.cfg.data.point_range, multiple=8)
        batch["gt_boxes"] = [torch.from_numpy(s["boxes"]) for s in samples]
        batch["gt_labels"] = [torch.from_numpy(s["labels"]) for s in samples]
        batch["labelled"] = torch.tensor([s["labelled"] for s in samples])
        batch["meta"] = [s["meta"] for s in samples]
        return batch

    # -- steps ----------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        if not batch["labelled"].all():
            unlabelled = [meta["frame_id"] for meta, ok in zip(batch["meta"], batch["labelled"].tolist()) if not ok]
            raise XmkdDataError(f"lidar_det trains on labelled frames only; no labels for {', '.join(unlabelled)} "
                                f"(split {self.cfg.data.train_split!r})")
        return self.gt_losses(self.nets["net"](batch), batch)

    def gt_losses(self, out: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        """Detection losses of a head's outputs against the ground-truth boxes over the batch's labelled frames
        (zero, with the same terms, when none is labelled): as released, the classification term is summed over
        the frames, the box and direction terms are averaged [CMKD: anchor_head_single_qfl.py:93 `.sum()`;
        anchor_head_template.py:190,209 `/ batch_size`]."""
        m = self.cfg.model
        b, ny, nx = out["cls"].shape[:3]
        anchors, a_cls = self.anchors(ny, nx)
        terms: dict[str, list[torch.Tensor]] = {}
        labelled = batch["labelled"].tolist()
        for i in [i for i in range(b) if labelled[i]] or [0]:
            gt_boxes, gt_labels = batch["gt_boxes"][i].to(anchors.device), batch["gt_labels"][i].to(anchors.device)
            t = assign(anchors, a_cls, m.classes, gt_boxes, gt_labels, m.assign_iou)
            losses = detection_losses(out["cls"][i].reshape(-1, len(m.classes)), out["box"][i].reshape(-1, 7),
                                      out["dir"][i].reshape(-1, out["dir"].shape[-1]), anchors, t, gt_boxes,
                                      gt_labels, m.box_weight, m.dir_weight, m.cls_weight)
            for k, v in losses.items():
                terms.setdefault(k, []).append(v if labelled[i] else v * 0)
        return {k: torch.stack(v).sum() if k == "cls" else torch.stack(v).mean() for k, v in terms.items()}

    @torch.no_grad()
    def detect(self, batch: dict) -> list[dict[str, np.ndarray]]:
        """Per sample: LiDAR boxes (K, 7), scores and class names after NMS."""
        m = self.cfg.model
        out = self.nets["net"](batch)
        b, ny, nx = out["cls"].shape[:3]
        anchors, _ = self.anchors(ny, nx)
        dets = []
        for i in range(b):
            d = decode_predictions(out["cls"][i].reshape(-1, len(m.classes)), out["box"][i].reshape(-1, 7),
                                   out["dir"][i].reshape(-1, out["dir"].shape[-1]), anchors, m.score_threshold,
                                   m.nms_threshold, post_max=m.max_detections)
            dets.append({"boxes": d["boxes"].cpu().numpy(), "scores": d["scores"].cpu().numpy(),
                         "names": [self.class_names[j] for j in d["labels"].tolist()]})
        return dets

    def write_predictions(self, batch: dict, folder: Path) -> list[str]:
        """KITTI prediction files for the batch's frames; returns their ids."""
        ids = []
        for det, meta in zip(self.detect(batch), batch["meta"]):
            lines = kitti_lines(det["boxes"], det["scores"], det["names"], meta)
            name = Path(meta["frame_id"]).name  # "testing/000123" -> 000123.txt, as the benchmark wants
            atomic_write_text(folder / f"{name}.txt", "".join(line + "\n" for line in lines), fsync=False)
            ids.append(name)
        return ids

    @torch.no_grad()
    def validate(self, batches: Iterable[dict]) -> dict[str, float]:
        folder = Path(self.cfg.output_dir) / self.cfg.name / "val_predictions"
        ids = [fid for batch in batches for fid in self.write_predictions(batch, folder)]
        all_ids = sorted({i for part in distributed.all_gather_object(ids) for i in part})
        split = folder / "split.txt"
        if distributed.is_main():
            atomic_write_text(split, "\n".join(all_ids) + "\n", fsync=False)
        distributed.barrier()
        gt = Path(self.cfg.data.root) / "training" / "label_2"
        ap = evaluate_folders(gt, folder, split)
        metrics = {}
        for cls in self.class_names:
            for metric in ("3d", "bev"):
                for diff in ("easy", "moderate", "hard"):
                    for overlap, suffix in (("strict", ""), ("loose", "_loose")):
                        key = f"{cls}/{metric}/R40/{overlap}/{diff}"
                        if key in ap:
                            metrics[f"{cls.lower()}_{metric}_r40_{diff}{suffix}"] = ap[key]
        return metrics
