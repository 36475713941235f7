"""`ftd`: FtD++ (and, with `model.variant: bftd`, its conference version BFtD) on the xMUDA data path (METHODS.md
section 2).

On top of xMUDA's networks an MFFM fusion module turns detached 2D and 3D point features into a fused 80-d feature;
the 2D main head classifies [2D feature ; projection of the fused feature] (the fused prediction P^F), the 3D main
head gives P^3. Per step:
- source: class-weighted CE on P^F and P^3;
- fusion-then-distillation KL on source (lambda_xm_src) and target (lambda_xm_trg): KL(sg P^3 || 2D mimic) +
  KL(sg P^F || 3D mimic) (BFtD: both mimicry heads distil from sg P^F);
- domain-preserving distillation (`lambda_cons` > 0): EMA teachers of the 2D, 3D and fusion modules predict a
  *stylised* copy of the source batch (FDA or mixup toward the paired target image, points rescaled to the target's
  density); L_sm = KL(p^F_t || P^F_s) + KL(p^3_t || P^3_s), L_fm = KL(softmax(z^F_t + z^3_t) || P^F_s) + KL(same ||
  P^3_s), L_cons = lambda_cons * (c * L_sm + lambda_cmkd * L_fm);
- xDPL (`lambda_pl` > 0, with `model.pseudo_labels` from `xmkd pseudo-label`): exp(-KL_xm^2D) CE(P^F_t, y^2D) +
  exp(-KL_xm^3D) CE(P^3_t, y^3D) on the target, the weights computed per point from the current predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xmkd.data.collate import clip_to_range
from xmkd.data.frame import Frame
from xmkd.data.pseudo_labels import PseudoLabels
from xmkd.data.style import density_transfer, fda, mixup
from xmkd.distill.losses import kl_probs
from xmkd.engine.ema import EMA
from xmkd.errors import XmkdConfigError
from xmkd.models.image.resnet import normalize_images
from xmkd.models.mffm import MFFM, FusedHead
from xmkd.recipes.xmuda import XMUDAConfig, XMUDAModel, XMUDARecipe


@dataclass
class FtDModel(XMUDAModel):
    variant: str = "ftd"  # ftd (FtD++) | bftd
    lambda_cons: float = 0.1
    c: float = 1.0  # weight of L_sm inside L_cons
    lambda_cmkd: float = 0.1  # weight of L_fm inside L_cons
    style: str = "fda"  # fda | mixup | none
    fda_L: float = 0.1
    mixup_weight: float = 0.5
    density_transfer: bool = True
    ema_decay: float = 0.999
    lambda_pl: float = 0.0
    pseudo_labels: str = ""  # file written by `xmkd pseudo-label`
    # MFFM external attention (release `Mult_EA`): 32 heads over a 4x expansion, 64 memory units, dropout 0.2,
    # softmax over every point of the batch (`sample`: over each sample's points)
    attention_heads: int = 32
    memory_units: int = 64
    attention_expansion: int = 4
    attention_dropout: float = 0.2
    attention_scope: str = "batch"


@dataclass
class FtDConfig(XMUDAConfig):
    recipe: str = "ftd"
    model: FtDModel = field(default_factory=FtDModel)


class FtDRecipe(XMUDARecipe):
    name = "ftd"
    schema = FtDConfig

    def build(self) -> None:
        super().build()
        m = self.cfg.model
        if m.variant not in ("ftd", "bftd"):
            raise XmkdConfigError(f"model.variant: expected ftd or bftd, got {m.variant!r}")
        if m.style not in ("fda", "mixup", "none"):
            raise XmkdConfigError(f"model.style: expected fda, mixup or none, got {m.style!r}")
        n = self.space.num_classes
        if m.attention_scope not in ("batch", "sample"):
            raise XmkdConfigError(f"model.attention_scope: expected batch or sample, got {m.attention_scope!r}")
        mffm = MFFM(64, 16, m.attention_heads, m.memory_units, m.attention_expansion, m.attention_dropout,
                    m.attention_scope)
        self.nets["fusion"] = nn.ModuleDict({"mffm": mffm}).to(self.device)
        # the fused head belongs to the 2D network, as in the release's Net2DSeg (its EMA, its learning rate)
        self.nets["net2d"]["fused_head"] = FusedHead(64, mffm.out_channels, n).to(self.device)
        self._emas = ({k: EMA(self.nets[k], m.ema_decay) for k in ("net2d", "net3d", "fusion")}
                      if m.lambda_cons else {})
        self.pseudo = None
        if m.lambda_pl:
            if not m.pseudo_labels:
                raise XmkdConfigError("model.pseudo_labels: lambda_pl > 0 needs a file from `xmkd pseudo-label`")
            self.pseudo = PseudoLabels.load(m.pseudo_labels)

    def emas(self) -> dict[str, EMA]:
        return self._emas

    def uses_target(self) -> bool:
        return True  # the target pairs with every step: fusion-then-distillation, stylisation, pseudo-labels

    # -- data: pseudo-labels and the stylised source ----------------------------------------------------------
    def make_domain_sample(self, frame: Frame, rng: np.random.Generator | None, d, domain: str) -> dict[str, Any]:
        sample = super().make_domain_sample(frame, rng, d, domain)
        if self.pseudo is not None and domain == "target" and rng is not None:
            labels_2d, labels_3d = self.pseudo.refined(frame.frame_id)
            sample["pl_2d"], sample["pl_3d"] = labels_2d[sample["raw"]], labels_3d[sample["raw"]]
        return sample

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(samples)
        if "source" not in samples[0]:
            return batch
        m = self.cfg.model
        if self.pseudo is not None:
            batch["target"]["pl_2d"] = torch.from_numpy(np.concatenate([s["target"]["pl_2d"] for s in samples]))
            batch["target"]["pl_3d"] = torch.from_numpy(np.concatenate([s["target"]["pl_3d"] for s in samples]))
        if m.lambda_cons:
            styled = []
            for s in samples:
                src, trg = s["source"], s["target"]
                image = src["image"]
                if m.style == "fda":
                    image = fda(image, trg["image"], m.fda_L)
                elif m.style == "mixup":
                    image = mixup(image, trg["image"], m.mixup_weight)
                xyz = src["xyz"]
                if m.density_transfer and len(trg["xyz"]) > 1:
                    xyz = clip_to_range(density_transfer(xyz, trg["xyz"])[0], self.cfg.data.point_range,
                                        self.cfg.data.voxel_size)
                styled.append({**src, "image": image, "xyz": xyz})
            batch["styled"] = self._domain_batch(styled, self.cfg.data)  # the same points, one for one
        return batch

    # -- steps ----------------------------------------------------------------------------------------------
    def run(self, batch: dict[str, Any], net2d: nn.Module, net3d: nn.Module, fusion: nn.Module
            ) -> dict[str, torch.Tensor]:
        img = net2d["backbone"](normalize_images(batch["images"]))
        h, w = img.shape[-2:]
        cols = batch["point_uv"][:, 0].long().clamp(0, w - 1)
        rows = batch["point_uv"][:, 1].long().clamp(0, h - 1)
        sample = batch["point_batch"]
        f2 = img[sample, :, rows, cols]
        f3 = net3d["backbone"](batch)
        fused = fusion["mffm"](img, sample, batch["point_uv"], f3, sample, int(batch["batch_size"]))
        _, mimic2 = net2d["head"](f2)
        main3, mimic3 = net3d["head"](f3)
        return {"main2d": net2d["fused_head"](f2, fused), "mimic2d": mimic2, "main3d": main3, "mimic3d": mimic3}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.run(batch, self.nets["net2d"], self.nets["net3d"], self.nets["fusion"])

    def xm_loss(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        fused = F.softmax(out["main2d"], 1).detach()
        if self.cfg.model.variant == "bftd":  # both mimicry heads distil from the fusion prediction
            return kl_probs(out["mimic2d"], fused) + kl_probs(out["mimic3d"], fused)
        return kl_probs(out["mimic2d"], F.softmax(out["main3d"], 1).detach()) + kl_probs(out["mimic3d"], fused)

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        m = self.cfg.model
        losses, src, trg = self.adaptation_losses(batch)  # seg_2d is the fused head's CE here
        if m.lambda_cons:
            with torch.no_grad():
                t = self.run(batch["styled"], *(self._emas[k].module for k in ("net2d", "net3d", "fusion")))
            p_f, p_3 = F.softmax(t["main2d"], 1), F.softmax(t["main3d"], 1)
            p_joint = F.softmax(t["main2d"] + t["main3d"], 1)
            l_sm = kl_probs(src["main2d"], p_f) + kl_probs(src["main3d"], p_3)
            l_fm = kl_probs(src["main2d"], p_joint) + kl_probs(src["main3d"], p_joint)
            losses["cons"] = m.lambda_cons * (m.c * l_sm + m.lambda_cmkd * l_fm)
        if self.pseudo is not None:
            losses["pl"] = m.lambda_pl * self.xdpl_loss(trg, batch["target"])
        return losses

    def xdpl_loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """Pseudo-label CE weighted per point by exp(-KL) between the modalities (agreement = trust)."""
        ig = self.space.ignore_index
        with torch.no_grad():
            lp2, lp3 = F.log_softmax(out["main2d"], 1), F.log_softmax(out["main3d"], 1)
            kl_2d = (lp3.exp() * (lp3 - lp2)).sum(1)  # KL(P^3 || P^F): how far 2D is from 3D here
            kl_3d = (lp2.exp() * (lp2 - lp3)).sum(1)
        ce2 = F.cross_entropy(out["main2d"], batch["pl_2d"], ignore_index=ig, reduction="none")
        ce3 = F.cross_entropy(out["main3d"], batch["pl_3d"], ignore_index=ig, reduction="none")
        valid2, valid3 = batch["pl_2d"] != ig, batch["pl_3d"] != ig
        term2 = (torch.exp(-kl_2d) * ce2)[valid2].sum() / valid2.sum().clamp(min=1)
        term3 = (torch.exp(-kl_3d) * ce3)[valid3].sum() / valid3.sum().clamp(min=1)
        return term2 + term3


class BFtDRecipe(FtDRecipe):
    """BFtD, the conference version: both mimicry heads distil from the fused prediction; no EMA-teacher
    consistency (`lambda_cons` 0) unless a config adds it."""

    name = "bftd"

    def build(self) -> None:
        if self.cfg.model.variant != "bftd":
            raise XmkdConfigError(f"model.variant: the bftd recipe needs variant bftd, got {self.cfg.model.variant!r}")
        super().build()
