"""Pictures of one `Frame`: the camera image, its pixel labels, LiDAR points coloured by class projected
onto it, and a bird's-eye view with the 3D boxes. Images are drawn with numpy (fast, exact pixels); the
bird's-eye view with matplotlib (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from xmkd.data.frame import CameraView, Frame
from xmkd.data.labels import LabelSpace
from xmkd.geometry.boxes import bev_corners, box_corners
from xmkd.geometry.camera import pixel_indices, project_points


def label_overlay(cam: CameraView, space: LabelSpace, alpha: float = 0.55) -> np.ndarray:
    """The image blended with its colour-coded pixel labels (ignore pixels keep the image)."""
    if cam.labels is None:
        raise ValueError(f"camera {cam.name} has no pixel labels")
    colors = space.colorize(cam.labels).astype(np.float32)
    valid = (cam.labels != space.ignore_index)[..., None]
    out = np.where(valid, (1 - alpha) * cam.image + alpha * colors, cam.image)
    return out.astype(np.uint8)


def points_overlay(cam: CameraView, points: np.ndarray, labels: np.ndarray | None, space: LabelSpace | None,
                   radius: int = 1, dim: float = 0.6) -> np.ndarray:
    """Projected LiDAR points drawn on the (dimmed) image: by class when labels are given, else by depth."""
    proj = project_points(points, cam.K, cam.T_cam_lidar, cam.image_size)
    vis = np.nonzero(proj.visible)[0]
    vis = vis[np.argsort(-proj.depth[vis])]  # far points first, near points on top
    rc = pixel_indices(proj.uv[vis])
    if labels is not None and space is not None:
        colors = space.colorize(labels[vis])
    else:
        import matplotlib

        d = np.clip(proj.depth[vis] / 60.0, 0, 1)
        colors = (matplotlib.colormaps["turbo"](1 - d)[:, :3] * 255).astype(np.uint8)
    img = (cam.image.astype(np.float32) * dim).astype(np.uint8)
    h, w = img.shape[:2]
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r = np.clip(rc[:, 0] + dr, 0, h - 1)
            c = np.clip(rc[:, 1] + dc, 0, w - 1)
            img[r, c] = colors
    return img


BEV_EXTENT = 50.0  # metres either side of the sensor, the least a bird's-eye view shows
BEV_STEP = 10.0  # a fitted extent is rounded up to this


def _all_boxes(frame: Frame, pred_boxes: np.ndarray | None) -> np.ndarray:
    parts = [np.asarray(b, np.float64).reshape(-1, 7) for b in
             (frame.boxes.boxes if frame.boxes is not None else None, pred_boxes) if b is not None]
    return np.concatenate(parts) if parts else np.zeros((0, 7))


def bev_extent(frame: Frame, pred_boxes: np.ndarray | None = None) -> float:
    """Half-width (metres) of a bird's-eye view that holds every box of the frame (and `pred_boxes`), corners
    included: BEV_EXTENT, widened in BEV_STEP steps as the farthest corner needs (a KITTI truck at 69 m: 70)."""
    boxes = _all_boxes(frame, pred_boxes)
    far = float(np.abs(bev_corners(boxes)).max()) if len(boxes) else 0.0
    return max(BEV_EXTENT, float(np.ceil(far / BEV_STEP) * BEV_STEP))


def bev_outside(frame: Frame, extent: float, pred_boxes: np.ndarray | None = None) -> str | None:
    """What a bird's-eye view of half-width `extent` leaves out, in words (points beyond it; boxes with a corner
    beyond it, by class and distance), or None when it shows everything."""
    far = np.abs(frame.points[:, :2]).max(1) >= extent
    parts = []
    if far.any():
        reach = float(np.abs(frame.points[:, :2]).max())
        parts.append(f"{int(far.sum())} of {frame.num_points} points (out to {reach:.0f} m)")
    boxes = _all_boxes(frame, pred_boxes)
    names = (list(frame.boxes.names) if frame.boxes is not None else []) + ["prediction"] * len(boxes)
    if len(boxes):
        out = np.abs(bev_corners(boxes)).max((1, 2)) > extent
        parts += [f"{names[i]} at {np.hypot(*boxes[i, :2]):.0f} m" for i in np.nonzero(out)[0]]
    if not parts:
        return None
    return f"the bird's-eye view shows +-{extent:.0f} m; outside it: {', '.join(parts)}"


def bev_figure(frame: Frame, space: LabelSpace | None, extent: float | None = None,
               pred_boxes: np.ndarray | None = None, size_px: int = 800) -> np.ndarray:
    """Bird's-eye view (RGB array) of +-`extent` metres (None: `bev_extent`, every box fits): points coloured by
    class (or height), boxes with their heading."""
    import matplotlib

    if extent is None:
        extent = bev_extent(frame, pred_boxes)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(size_px / 100, size_px / 100), dpi=100)
    pts = frame.points
    keep = (np.abs(pts[:, 0]) < extent) & (np.abs(pts[:, 1]) < extent)
    if frame.labels is not None and space is not None:
        colors = space.colorize(frame.labels[keep]) / 255.0
        colors[frame.labels[keep] == space.ignore_index] = 0.6
    else:
        colors = matplotlib.colormaps["viridis"](np.clip((pts[keep, 2] + 2) / 5, 0, 1))
    ax.scatter(pts[keep, 0], pts[keep, 1], s=0.3, c=colors, linewidths=0)
    for boxes, color in ((frame.boxes.boxes if frame.boxes is not None else None, "black"), (pred_boxes, "red")):
        if boxes is None or len(boxes) == 0:
            continue
        corners = bev_corners(np.asarray(boxes, np.float64))
        for box, c in zip(boxes, corners):
            poly = np.vstack([c, c[:1]])
            ax.plot(poly[:, 0], poly[:, 1], color=color, linewidth=0.8)
            tip = box[:2] + 0.5 * box[3] * np.array([np.cos(box[6]), np.sin(box[6])])
            ax.plot([box[0], tip[0]], [box[1], tip[1]], color=color, linewidth=0.8)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_title(f"{frame.frame_id}: bird's-eye view (LiDAR frame, metres)", fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


# box_corners index pairs of the 12 edges, and the front face's diagonals (to show the heading)
_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7), (0, 5),
          (1, 4)]


def boxes_overlay(cam: CameraView, boxes: np.ndarray, color: tuple[int, int, int], image: np.ndarray | None = None
                  ) -> np.ndarray:
    """LiDAR boxes (M, 7) drawn as projected 3D wireframes (front face crossed) on the image; boxes with a
    corner behind the camera are skipped."""
    img = (cam.image if image is None else image).copy()
    h, w = img.shape[:2]
    if len(boxes) == 0:
        return img
    corners = box_corners(np.asarray(boxes, np.float64))
    proj = project_points(corners.reshape(-1, 3), cam.K, cam.T_cam_lidar, cam.image_size, min_depth=0.1)
    uv, depth = proj.uv.reshape(-1, 8, 2), proj.depth.reshape(-1, 8)
    for box_uv, box_depth in zip(uv, depth):
        if (box_depth <= 0.1).any():
            continue
        for a, b in _EDGES:
            n = int(max(abs(box_uv[b] - box_uv[a]).max(), 1))
            t = np.linspace(0, 1, n + 1)[:, None]
            pts = np.round(box_uv[a] + t * (box_uv[b] - box_uv[a])).astype(np.int64)
            ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
            img[pts[ok, 1], pts[ok, 0]] = color
    return img


def save_frame_pictures(frame: Frame, space: LabelSpace | None, out_dir: str | Path,
                        cameras: list[str] | None = None, pred_boxes: np.ndarray | None = None,
                        extent: float | None = None) -> list[Path]:
    """Write <frame>_<camera>_{image,labels,points,boxes}.png and <frame>_bev.png; returns the paths. Ground-truth
    boxes are drawn in green (black in the bird's-eye view), `pred_boxes` (M, 7, LiDAR frame) in red; the
    bird's-eye view spans +-`extent` metres (None: `bev_extent`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    stem = frame.frame_id.replace("/", "_").replace("\\", "_")  # ids like "00/000001" name no folders

    def save(name: str, array: np.ndarray) -> None:
        path = out / f"{stem}_{name}.png"
        Image.fromarray(array).save(path)
        paths.append(path)

    for name in cameras or list(frame.cameras):
        cam = frame.cameras[name]
        save(f"{name}_image", cam.image)
        if cam.labels is not None and space is not None:
            save(f"{name}_labels", label_overlay(cam, space))
        save(f"{name}_points", points_overlay(cam, frame.points, frame.labels, space))
        if (frame.boxes is not None and len(frame.boxes)) or pred_boxes is not None:
            img = boxes_overlay(cam, frame.boxes.boxes if frame.boxes is not None else np.zeros((0, 7)), (40, 220, 40))
            save(f"{name}_boxes", boxes_overlay(cam, np.zeros((0, 7)) if pred_boxes is None else pred_boxes,
                                                (235, 40, 40), img))
    save("bev", bev_figure(frame, space, extent, pred_boxes=pred_boxes))
    return paths
