"""Helpers shared by the synthetic writers."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from xmkd.io import atomic_write_bytes


def token(*parts: object) -> str:
    """A deterministic 32-hex-digit token (nuScenes style) from any parts."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def write_image(path: Path, image: np.ndarray, quality: int = 92) -> None:
    """PNG or JPEG by extension; written atomically (no fsync); byte-identical for identical input."""
    buf = io.BytesIO()
    img = Image.fromarray(image)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(buf, format="JPEG", quality=quality, optimize=False)
    else:
        img.save(buf, format="PNG", compress_level=6)
    atomic_write_bytes(path, buf.getvalue(), fsync=False)


def write_array(path: Path, array: np.ndarray) -> None:
    # bulk data that `xmkd synth` can regenerate byte for byte: no fsync per file
    atomic_write_bytes(path, np.ascontiguousarray(array).tobytes(), fsync=False)
