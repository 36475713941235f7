"""Prediction overlays: ground truth and each model's point labels side by side, on a camera image and in a
bird's-eye view, with the model's mistakes marked, so a reader sees where a method wins or loses."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xmkd.data.frame import Frame
from xmkd.data.labels import LabelSpace
from xmkd.io import atomic_write
from xmkd.viz.frame import points_overlay

WRONG = np.array([230, 30, 30], np.uint8)
RIGHT = np.array([170, 170, 170], np.uint8)


def bev_raster(xy: np.ndarray, colors: np.ndarray, extent: float = 40.0, size: int = 320) -> np.ndarray:
    """Points (N, 2) in metres drawn as 2x2-pixel dots on a black (size, size, 3) image, x up, y left."""
    img = np.zeros((size, size, 3), np.uint8)
    scale = size / (2 * extent)
    row = ((extent - xy[:, 0]) * scale).astype(np.int64)
    col = ((extent - xy[:, 1]) * scale).astype(np.int64)
    ok = (row >= 0) & (row < size - 1) & (col >= 0) & (col < size - 1)
    for dr in (0, 1):
        for dc in (0, 1):
            img[row[ok] + dr, col[ok] + dc] = colors[ok]
    return img


def prediction_figure(frame: Frame, space: LabelSpace, predictions: dict[str, np.ndarray], camera: str,
                      out: str | Path, extent: float = 40.0) -> Path:
    """One row per model (ground truth first): camera image with its projected point labels, bird's-eye view
    of the labels, and the bird's-eye view of its errors (red = wrong, grey = right). `predictions[name]` holds
    one class id per keyframe point, or the ignore id where the model makes no prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_key = int(frame.meta.get("num_keyframe_points", frame.num_points))
    xyz, gt = frame.points[:n_key, :3], frame.labels[:n_key]
    labelled = gt != space.ignore_index
    cam = frame.cameras[camera]
    rows = {"ground truth": gt, **predictions}
    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 3.1 * len(rows)), dpi=90, squeeze=False,
                             gridspec_kw={"width_ratios": [cam.image_size[0] / cam.image_size[1], 1, 1]})
    for r, (name, pred) in enumerate(rows.items()):
        has = pred != space.ignore_index
        axes[r, 0].imshow(points_overlay(cam, xyz[has], pred[has], space, radius=1))
        axes[r, 1].imshow(bev_raster(xyz[has, :2], space.colorize(pred[has]), extent))
        if name == "ground truth":
            axes[r, 2].axis("off")
            title = name
        else:
            scored = has & labelled
            colors = np.where((pred[scored] == gt[scored])[:, None], RIGHT, WRONG)
            axes[r, 2].imshow(bev_raster(xyz[scored, :2], colors, extent))
            acc = 100 * float((pred[scored] == gt[scored]).mean()) if scored.any() else float("nan")
            title = f"{name}: {acc:.1f}% of {int(scored.sum())} points right"
            axes[r, 2].set_title("errors (red)", fontsize=8)
        axes[r, 0].set_title(title, fontsize=9, loc="left")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    present = sorted(set(np.unique(gt[labelled]).tolist()))
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.asarray(space.colors[c]) / 255) for c in present]
    fig.legend(handles, [space.class_names[c] for c in present], loc="lower center", ncol=min(8, len(present)),
               fontsize=7, frameon=False)
    fig.suptitle(f"{frame.frame_id}: {camera} and bird's-eye view ({extent:.0f} m)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    out = Path(out)
    atomic_write(out, lambda f: fig.savefig(f, format=out.suffix.lstrip(".") or "png"), fsync=False)
    plt.close(fig)
    return out
