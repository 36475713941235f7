"""Photometric image augmentation: torchvision's `ColorJitter(brightness, contrast, saturation)` on a PIL image, in
numpy, as xMUDA / FtD++ apply it to every training image (FTD:xmuda/data/nuscenes_lidarseg/
nuscenes_lidarseg_dataloader.py#L215-L216, strengths (0.4, 0.4, 0.4) in FTD:xmuda/config/xmuda.py#L69).

Each strength s draws a factor uniformly from [max(0, 1 - s), 1 + s]; the three adjustments run in a random order.
Every adjustment is PIL's `ImageEnhance` blend `degenerate + f * (image - degenerate)`, truncated to uint8:
brightness blends with black, contrast with the mean grey level, saturation with the image's grey version (PIL's
ITU-R 601 luma).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def luma(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 grey, PIL's `convert("L")` (fixed-point 0.299 / 0.587 / 0.114)."""
    rgb = image.astype(np.int64)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def _blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
    out = degenerate.astype(np.float32) + np.float32(factor) * (image.astype(np.float32) - degenerate)
    return np.clip(out, 0, 255).astype(np.uint8)  # PIL truncates toward zero


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return _blend(np.zeros_like(image), image, factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    mean = int(luma(image).mean() + 0.5)
    return _blend(np.full_like(image, mean), image, factor)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    return _blend(np.repeat(luma(image)[..., None], 3, axis=2), image, factor)


def color_jitter(image: np.ndarray, strengths: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 -> jittered uint8. `strengths` = (brightness, contrast, saturation); 0 skips one.

    Raises ValueError for a strength list that is not three non-negative numbers."""
    if len(strengths) != 3 or any(s < 0 for s in strengths):
        raise ValueError(f"color_jitter: expected three non-negative strengths (brightness, contrast, saturation), "
                         f"got {list(strengths)}")
    ops = (adjust_brightness, adjust_contrast, adjust_saturation)
    factors = [float(rng.uniform(max(0.0, 1 - s), 1 + s)) if s else None for s in strengths]
    for k in rng.permutation(3):
        if factors[k] is not None:
            image = ops[k](image, factors[k])
    return image
