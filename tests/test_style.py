"""FtD++ stylisation: FDA keeps the phase and swaps only the low-frequency amplitude; density transfer matches
points per volume."""

import numpy as np

from xmkd.data.style import density_transfer, fda, mixup, volume_per_point


def spectrum(img):
    return np.fft.fftshift(np.fft.fft2(img.astype(np.float64), axes=(0, 1)), axes=(0, 1))


def test_fda_swaps_low_frequency_amplitude_and_keeps_the_phase():
    rng = np.random.default_rng(0)
    src = rng.integers(40, 200, (64, 80, 3)).astype(np.uint8)
    tgt = (rng.integers(0, 60, (64, 80, 3)) + 100).astype(np.uint8)
    out = fda(src, tgt, L=0.1)
    s, t, o = spectrum(src), spectrum(tgt), spectrum(out)
    b = int(64 * 0.1)
    low = np.zeros((64, 80), bool)
    low[32 - b: 32 + b, 40 - b: 40 + b] = True  # frequencies -b .. b - 1, the release's four corner blocks
    assert np.allclose(np.abs(o)[low], np.abs(t)[low], rtol=0.05, atol=64 * 80 * 2)  # up to uint8 rounding
    high = ~low
    assert np.corrcoef(np.abs(o)[high].ravel(), np.abs(s)[high].ravel())[0, 1] > 0.95
    phase_err = np.angle(o[high] * np.conj(s[high]))
    assert np.median(np.abs(phase_err)) < 0.1
    assert abs(out.mean() - tgt.mean()) < abs(src.mean() - tgt.mean())  # the DC term (mean colour) moved


def test_mixup_and_density_transfer():
    a, b = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 200, np.uint8)
    assert (mixup(a, b, 0.25) == 50).all()
    rng = np.random.default_rng(1)
    src = rng.uniform(-10, 10, (4000, 3))
    tgt = rng.uniform(-20, 20, (2000, 3))
    moved, alpha = density_transfer(src, tgt)
    assert np.isclose(volume_per_point(moved), volume_per_point(tgt), rtol=1e-6)
    assert np.isclose(alpha, (volume_per_point(src) / volume_per_point(tgt)) ** (-1 / 3))


def test_float_stylisation_is_the_release_s_unrounded_unclipped_image():
    """`model.style_float`: the release styles [0, 1] floats; FDA's output then leaves the displayable range and the
    uint8 path (xmkd's default) is its rounded, clipped copy."""
    rng = np.random.default_rng(3)
    src = rng.integers(0, 256, (32, 40, 3)).astype(np.uint8)
    tgt = rng.integers(0, 256, (32, 40, 3)).astype(np.uint8)
    exact = fda(src, tgt, L=0.1, as_uint8=False)
    assert exact.dtype == np.float32 and (exact.min() < 0 or exact.max() > 255)
    assert np.array_equal(np.clip(np.round(exact), 0, 255).astype(np.uint8), fda(src, tgt, L=0.1))
    # the release's FDA on [0, 1] floats is the same image / 255 (the transform is linear in the image scale)
    assert np.allclose(fda(src / 255.0, tgt / 255.0, L=0.1, as_uint8=False) * 255, exact, atol=1e-3)
    blend = mixup(src, tgt, 0.2, as_uint8=False)
    assert blend.dtype == np.float32 and np.allclose(blend, 0.8 * src + 0.2 * tgt.astype(np.float64), atol=1e-4)
    assert np.array_equal(np.round(blend).astype(np.uint8), mixup(src, tgt, 0.2))
