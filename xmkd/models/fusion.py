"""U2MKD's bidirectional LiDAR <-> camera fusion blocks (METHODS.md section 1).

- `LidarToCamera` (L2C): point features are scatter-averaged into the image grid at the stage's resolution and
  at 1/2 and 1/4 of it, each map is upsampled back and the maps are averaged (sparse points -> a denser map);
  a gate `att = sigmoid(conv(tanh(conv(img) + conv(pts))))` weighs them; `fused = BN(conv([img ; CBR(pts) * att]))`.
  The caller continues the ResNet with ReLU(fused) and keeps `fused` as the decoder's skip.
- `CameraToLidar` (C2L): image features are sampled bilinearly at each point's projection; points outside every
  camera (or whose camera was dropped) get pseudo image features from an MLP "learner" on their point features,
  trained with MSE(learner(p)[in view], sg(image features[in view])); an EPNet-style gate
  `att = sigmoid(fc(tanh(fc(img) + fc(pts))))` and `out = ReLU(BN(conv([pts ; conv(img) * att])))`.
Point -> pixel correspondence comes as, per point, the index of its image in the (B * cameras) image batch
(-1 = in no camera) and its float (u, v) at full image resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def scatter_to_image(feats: torch.Tensor, image_index: torch.Tensor, uv: torch.Tensor, shape: tuple[int, int, int],
                     scale: float) -> torch.Tensor:
    """Mean of point features per pixel of an (n_images, H, W) grid; `uv` in full-resolution pixels, `scale`
    maps them to this grid. Returns (n_images, C, H, W) (zeros where no point falls)."""
    n, h, w = shape
    c = feats.shape[1]
    cols = (uv[:, 0] * scale).long().clamp(0, w - 1)
    rows = (uv[:, 1] * scale).long().clamp(0, h - 1)
    flat = (image_index * h + rows) * w + cols
    out = torch.zeros((n * h * w, c), dtype=feats.dtype, device=feats.device)
    out.index_add_(0, flat, feats)
    count = torch.bincount(flat, minlength=n * h * w).clamp(min=1).to(feats.dtype).unsqueeze(1)
    return (out / count).view(n, h, w, c).permute(0, 3, 1, 2)


def sample_image(img: torch.Tensor, image_index: torch.Tensor, uv: torch.Tensor, full_size: tuple[int, int]
                 ) -> torch.Tensor:
    """Bilinear samples (P, C) of feature maps img (n, C, h, w) at full-resolution pixel coords uv (P, 2)."""
    w_full, h_full = full_size
    grid = torch.stack([uv[:, 0] / w_full * 2 - 1, uv[:, 1] / h_full * 2 - 1], 1)  # align_corners=False
    out = torch.zeros((len(uv), img.shape[1]), dtype=img.dtype, device=img.device)
    for i in torch.unique(image_index).tolist():  # one grid_sample per image
        sel = image_index == i
        g = grid[sel].view(1, 1, -1, 2).to(img.dtype)
        out[sel] = F.grid_sample(img[i: i + 1], g, mode="bilinear", align_corners=False).view(img.shape[1], -1).t()
    return out


class LidarToCamera(nn.Module):
    def __init__(self, c_pts: int, c_img: int, scales: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.scales = scales
        self.to_img = nn.Linear(c_pts, c_img)
        self.gate_img = nn.Conv2d(c_img, c_img, 3, padding=1)
        self.gate_pts = nn.Conv2d(c_img, c_img, 3, padding=1)
        self.gate_out = nn.Conv2d(c_img, c_img, 1)
        self.pts_cbr = nn.Sequential(nn.Conv2d(c_img, c_img, 3, padding=1, bias=False), nn.BatchNorm2d(c_img),
                                     nn.ReLU(inplace=True))
        self.fuse = nn.Conv2d(2 * c_img, c_img, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_img)

    def forward(self, img: torch.Tensor, pts: torch.Tensor, image_index: torch.Tensor, uv: torch.Tensor,
                full_size: tuple[int, int]) -> torch.Tensor:
        n, _, h, w = img.shape
        vis = image_index >= 0
        feats = self.to_img(pts[vis])
        maps = []
        for s in self.scales:
            hs, ws = max(1, h // s), max(1, w // s)
            m = scatter_to_image(feats, image_index[vis], uv[vis], (n, hs, ws), ws / full_size[0])
            maps.append(m if s == 1 else F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False))
        pts_map = torch.stack(maps).mean(0)
        att = torch.sigmoid(self.gate_out(torch.tanh(self.gate_img(img) + self.gate_pts(pts_map))))
        return self.bn(self.fuse(torch.cat([img, self.pts_cbr(pts_map) * att], 1)))


class CameraToLidar(nn.Module):
    def __init__(self, c_pts: int, c_img: int, learner_hidden: int | None = None):
        super().__init__()
        # A small learner: its hidden width stays near the point width (a c_img x c_img layer on every point
        # of a frame would dominate the step's cost at ResNet's 512 channels).
        hidden = learner_hidden or min(c_img, 2 * c_pts)
        self.learner = nn.Sequential(nn.Linear(c_pts, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, c_img))
        self.fc_img = nn.Linear(c_img, c_pts)
        self.fc_pts = nn.Linear(c_pts, c_pts)
        self.fc_att = nn.Linear(c_pts, 1)
        self.img_proj = nn.Linear(c_img, c_pts)
        self.out = nn.Sequential(nn.Linear(2 * c_pts, c_pts, bias=False), nn.BatchNorm1d(c_pts), nn.ReLU(inplace=True))

    def forward(self, pts: torch.Tensor, img: torch.Tensor, image_index: torch.Tensor, uv: torch.Tensor,
                full_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused point features (N, c_pts) and the learner's imputation loss on the in-view points."""
        vis = image_index >= 0
        pseudo = self.learner(pts)
        sampled = sample_image(img, image_index[vis], uv[vis], full_size)
        img_feat = pseudo.clone()
        img_feat[vis] = sampled
        imputation = F.mse_loss(pseudo[vis], sampled.detach()) if vis.any() else pts.sum() * 0.0
        att = torch.sigmoid(self.fc_att(torch.tanh(self.fc_img(img_feat) + self.fc_pts(pts))))
        fused = self.out(torch.cat([pts, self.img_proj(img_feat) * att], 1))
        return fused, imputation
