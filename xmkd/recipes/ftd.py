"""`ftd`: FtD++ on the xMUDA data path (METHODS.md section 2), as released in Barcaaaa/FtD-PlusPlus
(`xmuda/train_{dn,us,vs,as}_bftd_uni.py`, `..._ssda.py`; "FTD:" below; docs/ftd.md has the Release parity table).

On top of xMUDA's networks an MFFM fusion module turns detached 2D and 3D point features into a fused 80-d feature;
the 2D network's fused head classifies [2D feature ; projection of the fused feature] (the fused prediction P^F),
the 3D main head gives P^3. Per step:
- source: class-weighted CE on P^F and P^3 (vK->SK: the 3D term x 0.1, `lambda_seg_3d`);
- fusion-then-distillation KL on source (lambda_xm_src) and target (lambda_xm_trg): KL(sg P^3 || 2D mimic) +
  KL(sg P^F || 3D mimic);
- domain-preserving distillation (`lambda_cons` > 0): EMA teachers of the 2D, 3D and fusion modules, in train mode
  (batch statistics, dropout; FTD:#L189-L191), predict a *stylised* copy of the labelled batch (FDA, or per batch a
  coin flip between mixup 0.95 / 0.05 and FDA for U->S and vK->SK, toward the paired target image; points rescaled
  to the target's density); L_sm = KL(p^F_t || P^F_s) + KL(p^3_t || P^3_s), L_fm = KL(softmax(p^F_t + p^3_t) ||
  P^F_s) + KL(same || P^3_s) (a softmax of summed *probabilities*, FTD:#L300), L_cons = lambda_cons * (c * L_sm +
  lambda_cmkd * L_fm);
- the student's labelled images are blended toward the paired target image after the teacher batch is built
  (`student_mixup`: D->N 0.2, A2D2 0.05; FTD:train_dn_bftd_uni.py#L305-L306);
- pseudo-labels (`lambda_pl` > 0, `model.pseudo_labels` from `xmkd pseudo-label`): xDPL exp(-KL_xm^2D) CE(P^F_t,
  y^2D) + exp(-KL_xm^3D) CE(P^3_t, y^3D), each weight one scalar per batch from the target's mimicry KL
  (FTD:#L392-L397); the weight is detached by default (`pl_weight_detach`, a fix: the release back-propagates
  through exp(-KL), which pushes the cross-modal KL *up*); vK->SK uses plain CE (`pl_weight: none`).
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
from xmkd.io import is_architecture_only
from xmkd.models.mffm import MFFM, SCOPES, FusedHead
from xmkd.recipes.xmuda import XMUDAConfig, XMUDAModel, XMUDARecipe

STYLES = ("fda", "mixup", "mixup_or_fda", "none")


@dataclass
class FtDModel(XMUDAModel):
    lambda_cons: float = 0.1
    c: float = 1.0  # weight of L_sm inside L_cons
    lambda_cmkd: float = 0.1  # weight of L_fm inside L_cons
    style: str = "fda"  # the teacher's image: fda | mixup | mixup_or_fda (a coin flip per batch) | none
    fda_L: float = 0.1
    mixup_weight: float = 0.05  # the target image's share in the teacher's mixup (release 0.95 / 0.05)
    student_mixup: float = 0.0  # the target image's share in the student's labelled images (D->N 0.2, A2D2 0.05)
    density_transfer: bool = True
    style_float: bool = True  # stylised / mixed images stay float (the release's); false: rounded to uint8
    ema_decay: float = 0.999
    teacher_mode: str = "train"  # train (release: batch statistics, dropout) | eval (the student's statistics)
    teacher_init: str = "independent"  # independent (release: its own init, first average 1/2) | student (a copy)
    lambda_pl: float = 0.0
    pseudo_labels: str = ""  # file written by `xmkd pseudo-label`
    pl_weight: str = "xdpl"  # xdpl (exp(-KL_xm), one weight per batch) | none (plain CE: the release's vK->SK)
    pl_weight_detach: bool = True  # false: the release's gradient through exp(-KL_xm)
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


def choose(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise XmkdConfigError(f"model.{name}: expected one of {', '.join(allowed)}, got {value!r}")


class FtDRecipe(XMUDARecipe):
    name = "ftd"
    schema = FtDConfig
    teacher_nets = ("net2d", "net3d", "fusion")

    def build(self) -> None:
        m = self.cfg.model
        choose("style", m.style, STYLES)
        choose("teacher_mode", m.teacher_mode, ("train", "eval"))
        choose("teacher_init", m.teacher_init, ("independent", "student"))
        choose("pl_weight", m.pl_weight, ("xdpl", "none"))
        choose("attention_scope", m.attention_scope, SCOPES)
        super().build()
        self.nets["fusion"] = self.make_fusion().to(self.device)
        self._emas = {k: self.make_teacher(k) for k in self.teacher_nets} if m.lambda_cons else {}
        self.pseudo = None
        if m.lambda_pl:
            if not m.pseudo_labels:
                raise XmkdConfigError("model.pseudo_labels: lambda_pl > 0 needs a file from `xmkd pseudo-label`")
            self.pseudo = PseudoLabels.load(m.pseudo_labels)
            self.pseudo.check_classes(self.space.num_classes, self.space.name)
            if not is_architecture_only():  # `xmkd summary` reads no dataset
                t = self.cfg.target
                self.pseudo.check_split(self.frames_of(t, t.train_split).records, t.train_split)

    def make_net2d(self) -> nn.Module:
        net = super().make_net2d()
        # the fused head is part of the release's 2D network (Net2DSeg): its EMA, its learning rate
        net["fused_head"] = FusedHead(64, 80, self.space.num_classes)
        return net

    def make_fusion(self) -> nn.Module:
        m = self.cfg.model
        return nn.ModuleDict({"mffm": MFFM(64, 16, m.attention_heads, m.memory_units, m.attention_expansion,
                                           m.attention_dropout, m.attention_scope)})

    def make_teacher(self, name: str) -> EMA:
        """The EMA teacher of one module: independently built (its own random init, ImageNet encoder if any) and
        first averaged with a = 1/2, as the release's `build_model_*` + `update_ema_variables(..., iteration + 1)`;
        or (`teacher_init: student`) a copy of the student."""
        m = self.cfg.model
        train_mode = m.teacher_mode == "train"
        if m.teacher_init == "student":
            return EMA(self.nets[name], m.ema_decay, train_mode=train_mode)
        make = {"net2d": self.make_net2d, "net3d": self.make_net3d, "fusion": self.make_fusion}[name]
        return EMA(self.nets[name], m.ema_decay, shadow=make().to(self.device), step=1, train_mode=train_mode)

    def emas(self) -> dict[str, EMA]:
        return self._emas

    def uses_target(self) -> bool:
        return True  # the target pairs with every step: fusion-then-distillation, stylisation, pseudo-labels

    # -- data: pseudo-labels, the stylised batch, the student's mixup -----------------------------------------
    def make_domain_sample(self, frame: Frame, rng: np.random.Generator | None, d, domain: str) -> dict[str, Any]:
        sample = super().make_domain_sample(frame, rng, d, domain)
        if self.pseudo is not None and domain == "target" and rng is not None:  # the unlabelled target only
            labels_2d, labels_3d = self.pseudo.refined(frame.frame_id, int(sample["points"]))
            sample["pl_2d"], sample["pl_3d"] = labels_2d[sample["raw"]], labels_3d[sample["raw"]]
        return sample

    def stylise(self, src: dict[str, Any], trg: dict[str, Any], coin: float) -> dict[str, Any]:
        """The teacher's copy of a labelled sample: its image styled toward the paired target image, its points
        rescaled to the target's density (alpha from both whole front-camera clouds, as released; then clipped onto
        the grid), every point kept (one for one with the student)."""
        m = self.cfg.model
        style = ("mixup" if coin < 0.5 else "fda") if m.style == "mixup_or_fda" else m.style
        image = src["image"]
        if style == "fda":
            image = fda(image, trg["image"], m.fda_L, as_uint8=not m.style_float)
        elif style == "mixup":
            image = mixup(image, trg["image"], m.mixup_weight, as_uint8=not m.style_float)
        xyz = src["xyz"]
        if m.density_transfer and len(trg["metric"]) > 1:  # alpha from the whole clouds, far points included
            xyz = clip_to_range(density_transfer(src["metric"], trg["metric"])[0], self.cfg.data.point_range,
                                self.cfg.data.voxel_size)
        return {**src, "image": image, "xyz": xyz}

    def collate_training(self, supervised: list[dict[str, Any]], n_source: int,
                         targets: list[dict[str, Any]] | None, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Adds "styled" (the teacher batch: every labelled frame, SSDA's labelled target ones included, styled
        toward the unlabelled target frame of its position) and the target's pseudo-labels; the student sees
        its labelled images blended toward the same target frames (`student_mixup`)."""
        m = self.cfg.model
        styled = [self.stylise(s, t, items[0]["coin"]) for s, t in zip(supervised, targets)] if m.lambda_cons \
            else None
        if m.student_mixup:
            supervised = [{**s, "image": mixup(s["image"], t["image"], m.student_mixup, as_uint8=not m.style_float)}
                          for s, t in zip(supervised, targets)]
        batch = super().collate_training(supervised, n_source, targets, items)
        if styled is not None:
            batch["styled"] = self._domain_batch(styled, self.cfg.data)
        if self.pseudo is not None:
            for key in ("pl_2d", "pl_3d"):
                batch["target"][key] = torch.from_numpy(np.concatenate([t[key] for t in targets]))
        return batch

    # -- steps ----------------------------------------------------------------------------------------------
    def run(self, batch: dict[str, Any], net2d: nn.Module, net3d: nn.Module, fusion: nn.Module
            ) -> dict[str, torch.Tensor]:
        img, f2 = self.image_features(net2d["backbone"], batch)
        sample = batch["point_batch"]
        f3 = net3d["backbone"](batch)
        fused = fusion["mffm"](img, sample, batch["point_uv"], f3, sample, int(batch["batch_size"]))
        _, mimic2 = net2d["head"](f2)
        main3, mimic3 = net3d["head"](f3)
        return {"main2d": net2d["fused_head"](f2, fused), "mimic2d": mimic2, "main3d": main3, "mimic3d": mimic3}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.run(batch, self.nets["net2d"], self.nets["net3d"], self.nets["fusion"])

    def xm_terms(self, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """KL(sg P^3 || 2D mimic) and KL(sg P^F || 3D mimic), each averaged over the points."""
        return (kl_probs(out["mimic2d"], F.softmax(out["main3d"], 1).detach()),
                kl_probs(out["mimic3d"], F.softmax(out["main2d"], 1).detach()))

    def xm_loss(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.xm_terms(out))

    def teacher_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The EMA teachers on a batch, in `teacher_mode` (set here: nothing else may leave them in another)."""
        nets = [self._emas[k].module.train(self.cfg.model.teacher_mode == "train") for k in self.teacher_nets]
        with torch.no_grad():
            return self.run(batch, *nets)

    def joint_target(self, t: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_fm's target: softmax(p^F_t + p^3_t), the softmax of the summed probabilities (FTD:#L300)."""
        return F.softmax(F.softmax(t["main2d"], 1) + F.softmax(t["main3d"], 1), 1)

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        losses, src, trg = self.adaptation_losses(batch)  # seg_2d is the fused head's CE here
        losses.update(self.teacher_losses(batch, src, trg, step))
        if self.pseudo is not None:
            losses["pl"] = self.cfg.model.lambda_pl * self.pl_loss(trg, batch["target"])
        return losses

    def teacher_losses(self, batch: dict[str, Any], src: dict[str, torch.Tensor], trg: dict[str, torch.Tensor],
                       step: int) -> dict[str, torch.Tensor]:
        """L_cons on the stylised labelled batch."""
        m = self.cfg.model
        if not m.lambda_cons:
            return {}
        t = self.teacher_outputs(batch["styled"])
        p_joint = self.joint_target(t)
        l_sm = kl_probs(src["main2d"], F.softmax(t["main2d"], 1)) + kl_probs(src["main3d"], F.softmax(t["main3d"], 1))
        l_fm = kl_probs(src["main2d"], p_joint) + kl_probs(src["main3d"], p_joint)
        return {"cons": m.lambda_cons * (m.c * l_sm + m.lambda_cmkd * l_fm)}

    def pl_loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """CE(P^F_t, y^2D) and CE(P^3_t, y^3D) over the points with a pseudo-label; with xDPL each weighted by
        exp(-KL) of the target's mimicry term of its modality (KL(sg P^3 || 2D mimic) for 2D, KL(sg P^F || 3D mimic)
        for 3D): one weight per batch, agreement = trust (FTD:train_dn_bftd_uni.py#L392-L397)."""
        m, ig = self.cfg.model, self.space.ignore_index
        ce = [F.cross_entropy(out[k], batch[y], ignore_index=ig) if (batch[y] != ig).any() else out[k].sum() * 0
              for k, y in (("main2d", "pl_2d"), ("main3d", "pl_3d"))]
        if m.pl_weight == "none":
            return ce[0] + ce[1]
        w = [torch.exp(-kl) for kl in self.xm_terms(out)]
        if m.pl_weight_detach:
            w = [x.detach() for x in w]
        return w[0] * ce[0] + w[1] * ce[1]
