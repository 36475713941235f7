import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xmkd.geometry.voxel import voxel_first, voxel_mean, voxelize

coords = st.floats(-20, 20, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 300), st.just(4)), elements=coords),
       st.sampled_from([0.05, 0.5, 1.0, (0.4, 0.4, 1.0)]))
def test_inverse_map_and_counts(points, size):
    v = voxelize(points, size)
    assert v.point_mask.all()
    # every point lies inside the voxel it maps to
    lo = v.coords[v.inverse] * np.asarray(size) + v.origin
    hi = lo + np.asarray(size)
    assert np.all(points[:, :3] >= lo - 1e-4) and np.all(points[:, :3] < hi + 1e-4)
    assert v.counts.sum() == len(points)
    assert np.array_equal(np.bincount(v.inverse, minlength=v.num_voxels), v.counts)
    assert len(np.unique(v.coords, axis=0)) == v.num_voxels  # voxels are unique
    assert np.all(v.first_index == np.array([np.nonzero(v.inverse == i)[0].min() for i in range(v.num_voxels)]))


def test_range_drops_outside_points_and_fixes_grid():
    pts = np.array([[0.1, 0.1, 0.1, 1], [0.15, 0.12, 0.1, 3], [5, 5, 5, 0], [-0.1, 0, 0, 0]], np.float32)
    v = voxelize(pts, 0.2, point_range=[0, 0, 0, 2, 2, 2])
    assert v.inverse.tolist() == [0, 0, -1, -1]
    assert v.grid_shape.tolist() == [10, 10, 10]
    assert v.coords.tolist() == [[0, 0, 0]]
    assert np.allclose(voxel_mean(pts, v), [[0.125, 0.11, 0.1, 2.0]])
    assert np.allclose(voxel_first(pts, v), pts[:1])
    assert np.allclose(v.centers(), [[0.1, 0.1, 0.1]])


def test_torch_matches_numpy():
    pts = np.random.default_rng(0).uniform(-10, 10, size=(2000, 4)).astype(np.float32)
    for rng in (None, [-5, -5, -5, 5, 5, 5]):
        a = voxelize(pts, 0.7, rng)
        b = voxelize(torch.from_numpy(pts), 0.7, rng)
        assert np.array_equal(a.coords, b.coords.numpy())
        assert np.array_equal(a.inverse, b.inverse.numpy())
        assert np.array_equal(a.counts, b.counts.numpy())
        assert np.array_equal(a.first_index, b.first_index.numpy())
        assert np.allclose(voxel_mean(pts, a), voxel_mean(torch.from_numpy(pts), b).numpy(), atol=1e-5)


def test_deterministic_sorted_order():
    pts = np.random.default_rng(1).uniform(0, 4, size=(500, 3)).astype(np.float32)
    a = voxelize(pts, 1.0)
    b = voxelize(pts[::-1].copy(), 1.0)
    assert np.array_equal(a.coords, b.coords)
    keys = (a.coords[:, 0] * a.grid_shape[1] + a.coords[:, 1]) * a.grid_shape[2] + a.coords[:, 2]
    assert np.all(np.diff(keys) > 0)
