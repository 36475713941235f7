"""HSRDN's high-order structural relations (RKD-style): 2nd-order pairwise distances ("lines") and 3rd-order
triplet angles ("surfaces") between feature nodes, matched student -> teacher with smooth-L1.

fix (METHODS.md section 3): the released code passes teacher and student the other way round, so these terms
have no gradient, and it relates whole flattened BEV maps across a batch of 2, where they are identically zero.
Here the teacher side is detached and the student side carries the gradient, and by default the nodes are taken
**inside each sample** (foreground BEV cells, or per-object pooled features), so the terms work at any batch size.
`cross_sample_nodes` keeps the released variant (one node per sample) for comparison.

Both relations are scale-free, so their gradient grows as 1 / (the student's feature spread): a student whose BEV
features start (or collapse) near one point gets relation gradients hundreds of times larger than the other terms'
and, under gradient clipping, the relations alone set the update (measured in docs/hsrdn.md). The student's
normalisers are therefore floored at `floor` times the teacher's (detached) mean pairwise distance: the relations
are the RKD ones wherever the student spreads at least that much, and their gradient stays bounded below it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distances(nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) -> the (N, N) Euclidean distances and their mean over the distinct pairs."""
    d = torch.cdist(nodes, nodes)
    n = nodes.shape[0]
    return d, d.sum() / max(n * (n - 1), 1)


def distance_relation(nodes: torch.Tensor, floor: float | torch.Tensor = 1e-6,
                      distances: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(N, C) -> (N, N) pairwise distances divided by their mean over distinct pairs (at least `floor`);
    `distances`: the nodes' `pairwise_distances`, when the caller already has them."""
    d, mean = distances if distances is not None else pairwise_distances(nodes)
    return d / torch.clamp(mean, min=floor)


def angle_relation(nodes: torch.Tensor, floor: float | torch.Tensor = 1e-12) -> torch.Tensor:
    """(N, C) -> (N, N, N): cosine of the angle at node j between the directions to nodes i and k; difference
    vectors shorter than `floor` are divided by `floor` instead of their length."""
    diff = F.normalize(nodes[None, :, :] - nodes[:, None, :], p=2, dim=-1, eps=floor)  # diff[j, i] = unit(i - j)
    return torch.bmm(diff, diff.transpose(1, 2))


def relation_losses(student: torch.Tensor, teacher: torch.Tensor, floor: float = 0.1) -> dict[str, torch.Tensor]:
    """Smooth-L1 between the relations of paired nodes (N, C) of student and teacher (teacher detached); the
    student's normalisers are floored at `floor` x the teacher's mean pairwise distance (0: plain RKD)."""
    t = teacher.detach()
    if student.shape[0] < 3:
        zero = student.sum() * 0
        return {"distance": zero, "angle": zero}
    t_distances = pairwise_distances(t)
    bound = torch.clamp(floor * t_distances[1], min=1e-12)  # a tensor: no device -> host copy per sample
    return {"distance": F.smooth_l1_loss(distance_relation(student, bound), distance_relation(t, 1e-6, t_distances)),
            "angle": F.smooth_l1_loss(angle_relation(student, bound), angle_relation(t))}


def bev_nodes(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor, max_nodes: int = 64,
              min_weight: float = 0.1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per sample, the features (N, C) of the `max_nodes` BEV cells with the highest `weight` (B, H, W) among
    those with weight >= `min_weight` (the teacher's foreground score: a sigmoid is never 0, so a filter at 0 would
    keep every cell and fill the nodes with background), from maps (B, C, H, W). N may be below 3 (no relation)."""
    out = []
    for b in range(student.shape[0]):
        w = weight[b].reshape(-1)
        k = int(min(max_nodes, int((w >= min_weight).sum())))
        idx = torch.topk(w, k).indices if k else w.new_zeros(0, dtype=torch.long)
        out.append((student[b].flatten(1)[:, idx].T, teacher[b].flatten(1)[:, idx].T))
    return out


def within_sample_relations(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor,
                            max_nodes: int = 64, floor: float = 0.1, min_weight: float = 0.1
                            ) -> dict[str, torch.Tensor]:
    """Relation losses averaged over the samples of a batch, nodes = top foreground cells of each sample (a
    sample with fewer than 3 cells at `min_weight` contributes 0)."""
    terms = [relation_losses(s, t, floor) for s, t in bev_nodes(student, teacher, weight, max_nodes, min_weight)]
    return {k: torch.stack([t[k] for t in terms]).mean() for k in ("distance", "angle")}


def cross_sample_nodes(student: torch.Tensor, teacher: torch.Tensor, floor: float = 0.1) -> dict[str, torch.Tensor]:
    """The released variant: one node per sample (its flattened map); needs a batch of at least 3 to be non-zero."""
    return relation_losses(student.flatten(1), teacher.flatten(1), floor)
