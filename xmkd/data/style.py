"""Source-to-target stylisation for FtD++'s domain-preserving distillation (METHODS.md section 2).

- `fda`: Fourier domain adaptation: the source image keeps its phase and takes the target's low-frequency
  amplitude, frequencies -b .. b - 1 in both axes with b = floor(L * min(H, W)), L = 0.1 (the release's four b x b
  corner blocks of the unshifted spectrum, FTD:xmuda/models/fda.py#L12-L19); uint8 in and out (rounded, clipped),
  or (`as_uint8=False`, the release's: it works on [0, 1] floats) float32 on the 0 .. 255 scale, neither rounded
  nor clipped.
- `mixup`: a convex blend of the source image toward a target image (uint8, or float32 with `as_uint8=False`).
- `density_transfer`: rescales a source point cloud so its points-per-volume (bounding-box volume per point)
  matches the target's: alpha = (v_s / v_t)^(-1/3).
"""

from __future__ import annotations

import numpy as np


def fda(source: np.ndarray, target: np.ndarray, L: float = 0.1, as_uint8: bool = True) -> np.ndarray:
    """(H, W, 3) images (uint8, or float on the 0 .. 255 scale) of the same size -> the stylised source: uint8
    (rounded, clipped), or float32 unrounded and unclipped (`as_uint8=False`)."""
    if source.shape != target.shape:
        raise ValueError(f"fda needs images of one size, got {source.shape} and {target.shape}")
    s = np.fft.fftshift(np.fft.fft2(source.astype(np.float64), axes=(0, 1)), axes=(0, 1))
    t = np.fft.fftshift(np.fft.fft2(target.astype(np.float64), axes=(0, 1)), axes=(0, 1))
    amp, phase = np.abs(s), np.angle(s)
    h, w = source.shape[:2]
    b = int(np.floor(min(h, w) * L))
    ch, cw = h // 2, w // 2
    amp[ch - b: ch + b, cw - b: cw + b] = np.abs(t)[ch - b: ch + b, cw - b: cw + b]
    out = np.fft.ifft2(np.fft.ifftshift(amp * np.exp(1j * phase), axes=(0, 1)), axes=(0, 1)).real
    return np.clip(np.round(out), 0, 255).astype(np.uint8) if as_uint8 else out.astype(np.float32)


def mixup(source: np.ndarray, target: np.ndarray, weight: float, as_uint8: bool = True) -> np.ndarray:
    """(1 - weight) * source + weight * target: uint8 (rounded), or float32 (`as_uint8=False`)."""
    out = (1 - weight) * source.astype(np.float64) + weight * target
    return np.clip(np.round(out), 0, 255).astype(np.uint8) if as_uint8 else out.astype(np.float32)


def volume_per_point(xyz: np.ndarray) -> float:
    extent = np.maximum(xyz.max(0) - xyz.min(0), 1e-6)
    return float(np.prod(extent) / max(len(xyz), 1))


def density_transfer(source_xyz: np.ndarray, target_xyz: np.ndarray) -> tuple[np.ndarray, float]:
    """The source points scaled about the sensor by alpha = (v_s / v_t)^(-1/3), and alpha."""
    alpha = (volume_per_point(source_xyz) / volume_per_point(target_xyz)) ** (-1 / 3)
    return (source_xyz * alpha).astype(source_xyz.dtype), float(alpha)
