"""`camera_seg`: U2MKD's camera-only baseline — SwiftNet-ResNet18 on the frame's cameras, supervised by the
labels of the LiDAR points projected into them (CE + Lovasz at those pixels), with the same data path,
camera drop, image sizes and pixel head order (`model.pixel_head_at_image`) as the `u2mkd` student (it reads the
`u2mkd` config schema; the LiDAR backbone and distillation settings are unused). In a label-scarce run
(`model.labelled`) it trains on the labelled frames only, the ones the student keeps the labels of.

Validation: pixel mIoU at the projected in-view points, and the point mIoU over *every* keyframe point, where
a point outside every camera has no prediction and counts as a miss (a camera-only model cannot label it);
`coverage` is the fraction of labelled points it can label at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from xmkd.data.dataset import FrameSamples
from xmkd.data.labelled import labelled_only
from xmkd.data.labels import get_label_space
from xmkd.eval.segmentation import ConfusionMatrix
from xmkd.models.image.resnet import normalize_images
from xmkd.models.image.swiftnet import SwiftNet
from xmkd.models.losses import seg_loss
from xmkd.models.u2mkd import pixel_logits_at_points
from xmkd.recipes.lidar_seg import per_class_iou
from xmkd.recipes.u2mkd import U2MKDConfig, U2MKDRecipe


@dataclass
class CameraSegConfig(U2MKDConfig):
    recipe: str = "camera_seg"


def miou_with_misses(cm: ConfusionMatrix) -> float:
    """Mean IoU over the classes present (ground truth or prediction), counting ignore predictions on
    labelled points as false negatives."""
    present = ~np.isnan(cm.iou("nuscenes"))
    iou = cm.iou("semantickitti")
    return float(iou[present].mean()) if present.any() else float("nan")


class CameraSegRecipe(U2MKDRecipe):
    name = "camera_seg"
    schema = CameraSegConfig

    distill = False  # no teacher, no sweeps

    def build(self) -> None:
        m = self.cfg.model
        self.space = get_label_space(self.cfg.data.label_space)
        net = SwiftNet(self.space.num_classes, m.decoder_width, m.image_depth, m.image_stem_stride,
                       m.pixel_head_at_image)
        if m.image_pretrained:
            net.backbone.load_pretrained(m.image_pretrained)
        self.nets["camera"] = net.to(self.device)
        self.paste = None  # pasted LiDAR instances are invisible to the cameras

    def train_dataset(self) -> FrameSamples:
        """The training split; in a label-scarce run (`model.labelled`) only its labelled frames (every loss of
        this baseline needs labels)."""
        frames = labelled_only(self.frames(self.cfg.data.train_split), self.cfg.model.labelled, "camera_seg")
        return FrameSamples(frames, self.make_sample, self.cfg.seed, train=True)

    def _pixel_logits(self, student_batch: dict) -> torch.Tensor:
        return self.nets["camera"](normalize_images(student_batch["images"]))

    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        sb = batch["student"]
        pix, vis = pixel_logits_at_points(self._pixel_logits(sb), sb["point_image"], sb["point_uv"])
        return seg_loss(pix, batch["labels"][vis], self.space.ignore_index, self.cfg.model.lovasz_weight)

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        """Class per point; points outside every camera get the ignore id (no prediction)."""
        sb = batch["student"]
        pix, vis = pixel_logits_at_points(self._pixel_logits(sb), sb["point_image"], sb["point_uv"])
        out = torch.full(vis.shape, self.space.ignore_index, dtype=torch.long, device=vis.device)
        out[vis] = pix.argmax(1)
        return out

    @torch.no_grad()
    def validate(self, batches: Iterable[dict]) -> dict[str, float]:
        n, ig, names = self.space.num_classes, self.space.ignore_index, self.space.class_names
        point_cm, pixel_cm = ConfusionMatrix(n, ig, names), ConfusionMatrix(n, ig, names)
        seen = labelled = 0
        for batch in batches:
            pred, labels = self.predict(batch), batch["labels"]
            vis = batch["student"]["point_image"] >= 0
            point_cm.update(pred, labels)
            pixel_cm.update(pred[vis], labels[vis])
            seen += int((vis & (labels != ig)).sum())
            labelled += int((labels != ig).sum())
        point_cm.all_reduce()
        return {"miou": miou_with_misses(point_cm), "pixel_miou": pixel_cm.all_reduce().miou(),
                "coverage": seen / max(1, labelled), **per_class_iou(pixel_cm)}
