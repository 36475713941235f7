"""U2MKD's bidirectional LiDAR <-> camera fusion blocks (METHODS.md section 1), as released: `L2CFusion` /
`L2CAILayer` and `Atten_Fusion_Conv` / `IA_Layer` in core/models/fusion_blocks.py, the L2C scatter, the C2L
sampling and the imputation learners in core/models/nuscenes/spvcnn_swiftnet18_spformer_tsd_full.py:279-287,
448-501 (github:isunLt/U2MKD @ d8dfa69).

- `LidarToCamera` (L2C): the stage's point features (their own channels) are scatter-averaged into the image
  grid at `n_scales` resolutions (1, 1/2, 1/4, ... of the stage's; 4 - i of them at encoder stage i = 0..3),
  each map upsampled back (bilinear, align_corners=True) and the maps averaged; a scalar gate per pixel
  `att = sigmoid(fc3(tanh(fc1(img) + fc2(pts))))` (1x1 convolutions to C_img / 4, then to 1) weighs
  `CBR_1x1(pts)`, and `fused = BN(conv_1x1([img ; CBR(pts) * att]))`. It returns (ReLU(fused), fused): the
  ResNet continues on the first, the decoder and C2L take the second.
- `CameraToLidar` (C2L): image features are sampled bilinearly (align_corners=True) at each point's projection;
  points outside every camera (or whose camera was dropped) get pseudo image features from the learner
  `Linear-BN-ReLU-Linear-BN` on their point features, trained with MSE(learner(p)[in view], sg(image
  features[in view])); an EPNet gate `att = sigmoid(fc3(tanh(fc1(img) + fc2(pts))))` with fc1 = BN-ReLU-Linear
  (C_img -> C_pts / 4), fc2 = Linear(C_pts -> C_pts / 4); `out = ReLU(BN(conv([pts ; CBR(img) * att])))`.
Point -> pixel correspondence comes as, per point, the index of its image in the (B * cameras) image batch
(-1 = in no camera) and its float (u, v) at full image resolution (W, H); u / (W - 1) maps it onto any grid as
the release's normalised coordinates do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def scatter_to_image(feats: torch.Tensor, image_index: torch.Tensor, uv: torch.Tensor, shape: tuple[int, int, int],
                     full_size: tuple[int, int]) -> torch.Tensor:
    """Mean of point features (P, C) per pixel of an (n_images, h, w) grid: pixel floor(u / (W - 1) * (w - 1)),
    floor(v / (H - 1) * (h - 1)) for `uv` at full resolution (W, H) (release). Returns (n_images, C, h, w), zeros
    where no point falls."""
    n, h, w = shape
    c = feats.shape[1]
    cols = torch.floor(uv[:, 0] / max(full_size[0] - 1, 1) * (w - 1)).long().clamp(0, w - 1)
    rows = torch.floor(uv[:, 1] / max(full_size[1] - 1, 1) * (h - 1)).long().clamp(0, h - 1)
    flat = (image_index * h + rows) * w + cols
    out = torch.zeros((n * h * w, c), dtype=feats.dtype, device=feats.device)
    out.index_add_(0, flat, feats)
    count = torch.bincount(flat, minlength=n * h * w).clamp(min=1).to(feats.dtype).unsqueeze(1)
    return (out / count).view(n, h, w, c).permute(0, 3, 1, 2)


def sample_image(img: torch.Tensor, image_index: torch.Tensor, uv: torch.Tensor, full_size: tuple[int, int]
                 ) -> torch.Tensor:
    """Bilinear samples (P, C) of feature maps img (n, C, h, w) at full-resolution pixel coords uv (P, 2),
    pixel 0 and W - 1 on the first and last feature column (align_corners=True, release `Feature_Gather`)."""
    w_full, h_full = full_size
    grid = torch.stack([uv[:, 0] / max(w_full - 1, 1) * 2 - 1, uv[:, 1] / max(h_full - 1, 1) * 2 - 1], 1)
    out = torch.zeros((len(uv), img.shape[1]), dtype=img.dtype, device=img.device)
    for i in torch.unique(image_index).tolist():  # one grid_sample per image
        sel = image_index == i
        g = grid[sel].view(1, 1, -1, 2).to(img.dtype)
        out[sel] = F.grid_sample(img[i: i + 1], g, mode="bilinear", align_corners=True).view(img.shape[1], -1).t()
    return out


class LidarToCamera(nn.Module):
    def __init__(self, c_pts: int, c_img: int, n_scales: int = 1):
        super().__init__()
        self.n_scales = n_scales
        r = c_img // 4
        self.pts_cbr = nn.Sequential(nn.Conv2d(c_pts, c_img, 1), nn.BatchNorm2d(c_img), nn.ReLU(inplace=True))
        self.fc1 = nn.Conv2d(c_img, r, 1)
        self.fc2 = nn.Conv2d(c_pts, r, 1)
        self.fc3 = nn.Conv2d(r, 1, 1)
        self.fuse = nn.Conv2d(2 * c_img, c_img, 1)
        self.bn = nn.BatchNorm2d(c_img)

    def point_map(self, img: torch.Tensor, pts: torch.Tensor, image_index: torch.Tensor, uv: torch.Tensor,
                  full_size: tuple[int, int]) -> torch.Tensor:
        """The multi-scale scattered point map (n, C_pts, h, w) (release tsd_full.py:448-478)."""
        n, _, h, w = img.shape
        vis = image_index >= 0
        acc = torch.zeros((n, pts.shape[1], h, w), dtype=pts.dtype, device=pts.device)
        for k in range(self.n_scales):
            s = 2 ** k
            hs, ws = int(round(h / s + 0.01)), int(round(w / s + 0.01))
            m = scatter_to_image(pts[vis], image_index[vis], uv[vis], (n, hs, ws), full_size)
            acc = acc + F.interpolate(m, size=(h, w), mode="bilinear", align_corners=True)
        return acc / self.n_scales

    def forward(self, img: torch.Tensor, pts: torch.Tensor, image_index: torch.Tensor, uv: torch.Tensor,
                full_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """img (n, C_img, h, w) pre-activation stage features, pts (N, C_pts) -> (ReLU(fused), fused)."""
        pmap = self.point_map(img, pts, image_index, uv, full_size)
        att = torch.sigmoid(self.fc3(torch.tanh(self.fc1(img) + self.fc2(pmap))))  # (n, 1, h, w)
        fused = self.bn(self.fuse(torch.cat([img, self.pts_cbr(pmap) * att], 1)))
        return F.relu(fused), fused


class CameraToLidar(nn.Module):
    def __init__(self, c_pts: int, c_img: int):
        super().__init__()
        r = c_pts // 4
        self.learner = nn.Sequential(nn.Linear(c_pts, c_img), nn.BatchNorm1d(c_img), nn.ReLU(inplace=True),
                                     nn.Linear(c_img, c_img), nn.BatchNorm1d(c_img))
        self.img_cbr = nn.Sequential(nn.Linear(c_img, c_pts), nn.BatchNorm1d(c_pts), nn.ReLU(inplace=True))
        self.fc1 = nn.Sequential(nn.BatchNorm1d(c_img), nn.ReLU(inplace=True), nn.Linear(c_img, r))
        self.fc2 = nn.Linear(c_pts, r)
        self.fc3 = nn.Linear(r, 1)
        self.out = nn.Sequential(nn.Linear(2 * c_pts, c_pts), nn.BatchNorm1d(c_pts), nn.ReLU(inplace=True))

    def forward(self, pts: torch.Tensor, img: torch.Tensor, image_index: torch.Tensor, uv: torch.Tensor,
                full_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused point features (N, C_pts) and the learner's imputation loss on the in-view points."""
        vis = image_index >= 0
        pseudo = self.learner(pts)
        sampled = sample_image(img, image_index[vis], uv[vis], full_size)
        img_feat = pseudo.clone()
        img_feat[vis] = sampled
        imputation = F.mse_loss(pseudo[vis], sampled.detach()) if vis.any() else pts.sum() * 0.0
        att = torch.sigmoid(self.fc3(torch.tanh(self.fc1(img_feat) + self.fc2(pts))))
        return self.out(torch.cat([pts, self.img_cbr(img_feat) * att], 1)), imputation
