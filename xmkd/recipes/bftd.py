"""`bftd`: BFtD, the conference version of FtD++, as released in Barcaaaa/BFtD-xMUDA (`xmuda/train_dn.py`,
`train_us.py`; "BFTD:" below; docs/ftd.md has the Release parity table).

xMUDA's networks with their pure 2D and 3D main heads, plus a fusion classifier (`xmkd.models.bftd.BFtDFusion`)
on detached features. Per step (BFTD:train_dn.py#L241-L407):
- source: class-weighted CE on the 2D main, the 3D main and the fusion prediction;
- fusion-then-distillation: KL(sg softmax(fusion) || 2D mimic) + KL(sg softmax(fusion) || 3D mimic), on source
  (lambda_xm_src) and target (lambda_xm_trg);
- EMA teachers of the three modules (train mode) on the FDA-stylised, density-transferred labelled batch:
  L_cons = lambda_cons * (c * [KL(p^2D_t || P^2D_s) + KL(p^3D_t || P^3D_s)] + lambda_cmkd * [KL(softmax(fusion_t)
  || P^2D_s) + KL(same || P^3D_s)]);
- the student's source images blended toward the target (D->N 0.8 / 0.2, U->S 0.99 / 0.01);
- U->S: after iteration `target_teacher_after` also lambda_target_teacher * [KL(softmax(fusion_t) || P^2D_t) +
  KL(same || P^3D_t)], the teachers on the plain target batch (BFTD:train_us.py#L296-L300,L413-L422);
- pseudo-labels: plain CE on the 2D and 3D main heads.
Not reproduced: A2D2's two-stage training (BFTD:train_as_first.py, train_as_second.py).
Evaluation: 2D, 3D, and xM = the fusion classifier's prediction (BFTD:xmuda/data/utils/validate.py#L174-L184).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xmkd.distill.losses import kl_probs
from xmkd.errors import XmkdConfigError
from xmkd.models.bftd import VARIANTS, BFtDFusion
from xmkd.recipes.ftd import FtDConfig, FtDModel, FtDRecipe, choose
from xmkd.recipes.xmuda import XMUDARecipe


@dataclass
class BFtDModel(FtDModel):
    lambda_cmkd: float = 0.01
    fusion_net: str = "mffm"  # mffm (the release's day->night) | mffm_v1 (its usa->singapore and a2d2)
    student_mixup: float = 0.2
    pl_weight: str = "none"
    lambda_target_teacher: float = 0.0  # U->S: 0.001
    target_teacher_after: int = 0  # the target-teacher term after this iteration (U->S: 80000)


@dataclass
class BFtDConfig(FtDConfig):
    recipe: str = "bftd"
    model: BFtDModel = field(default_factory=BFtDModel)


class BFtDRecipe(FtDRecipe):
    name = "bftd"
    schema = BFtDConfig

    def build(self) -> None:
        m = self.cfg.model
        choose("fusion_net", m.fusion_net, VARIANTS)
        if m.ssda_labelled_split:
            raise XmkdConfigError("model.ssda_labelled_split: the BFtD release has no semi-supervised setting; "
                                  "use recipe: ftd")
        if m.lambda_target_teacher and not m.lambda_cons:
            raise XmkdConfigError("model.lambda_target_teacher needs the EMA teachers (lambda_cons > 0)")
        super().build()

    def make_net2d(self) -> nn.Module:
        return XMUDARecipe.make_net2d(self)  # no fused head: the 2D main head sees 2D features alone

    def make_fusion(self) -> nn.Module:
        m = self.cfg.model
        return nn.ModuleDict({"mffm": BFtDFusion(self.space.num_classes, m.fusion_net, m.attention_heads,
                                                 m.memory_units, m.attention_expansion, m.attention_dropout,
                                                 m.attention_scope)})

    def run(self, batch: dict[str, Any], net2d: nn.Module, net3d: nn.Module, fusion: nn.Module
            ) -> dict[str, torch.Tensor]:
        img, f2 = self.image_features(net2d["backbone"], batch)
        sample = batch["point_batch"]
        f3 = net3d["backbone"](batch)
        main2, mimic2 = net2d["head"](f2)
        main3, mimic3 = net3d["head"](f3)
        logits = fusion["mffm"](img, sample, batch["point_uv"], f3, sample, int(batch["batch_size"]))
        return {"main2d": main2, "mimic2d": mimic2, "main3d": main3, "mimic3d": mimic3, "fusion": logits}

    def xm_terms(self, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        fused = F.softmax(out["fusion"], 1).detach()  # both mimicry heads distil from the fusion prediction
        return kl_probs(out["mimic2d"], fused), kl_probs(out["mimic3d"], fused)

    def joint_target(self, t: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.softmax(t["fusion"], 1)

    def adaptation_losses(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
        losses, src, trg = super().adaptation_losses(batch)
        if self.cfg.model.lambda_xm_src:  # the release computes (and trains) the fusion CE in this branch
            losses["seg_fusion"] = F.cross_entropy(src["fusion"], batch["source"]["labels"], weight=self.weights,
                                                   ignore_index=self.space.ignore_index)
        return losses, src, trg

    def teacher_losses(self, batch: dict[str, Any], src: dict[str, torch.Tensor], trg: dict[str, torch.Tensor],
                       step: int) -> dict[str, torch.Tensor]:
        m = self.cfg.model
        losses = super().teacher_losses(batch, src, trg, step)
        if m.lambda_target_teacher and step > m.target_teacher_after:  # the release: `iteration > 80000`
            p = self.joint_target(self.teacher_outputs(batch["target"]))
            losses["target_teacher"] = m.lambda_target_teacher * (kl_probs(trg["main2d"], p)
                                                                  + kl_probs(trg["main3d"], p))
        return losses

    @torch.no_grad()
    def predict_all(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per point softmax probabilities of 2D, 3D and xM (the fusion classifier)."""
        out = self.forward(batch)
        return {"2d": F.softmax(out["main2d"], 1), "3d": F.softmax(out["main3d"], 1), "xm": F.softmax(out["fusion"], 1)}
