import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xmkd.geometry.transforms import (
    invert_transform,
    make_transform,
    matrix_to_quat,
    quat_multiply,
    quat_to_matrix,
    rotation_z,
    transform_points,
    wrap_angle,
)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
quats = arrays(np.float64, 4, elements=st.floats(-1, 1)).filter(lambda q: np.linalg.norm(q) > 1e-3)


@given(quats)
def test_quaternion_matrix_round_trip(q):
    r = quat_to_matrix(q)
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-9)
    assert np.isclose(np.linalg.det(r), 1.0)
    q2 = matrix_to_quat(r)
    qn = q / np.linalg.norm(q)
    assert np.allclose(q2, qn, atol=1e-7) or np.allclose(q2, -qn, atol=1e-7)


@given(quats, quats)
def test_quaternion_product_matches_matrix_product(a, b):
    assert np.allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-9)


def test_quaternion_known_values_wxyz_order():
    # 90 degrees about z: (w, x, y, z) = (cos 45, 0, 0, sin 45) maps +x to +y.
    q = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    assert np.allclose(quat_to_matrix(q) @ [1, 0, 0], [0, 1, 0])
    assert np.allclose(quat_to_matrix(q), rotation_z(np.pi / 2))


@settings(max_examples=50)
@given(quats, arrays(np.float64, 3, elements=finite), arrays(np.float64, (20, 3), elements=finite))
def test_transform_inverse_round_trip(q, t, pts):
    T = make_transform(q, t)
    back = transform_points(invert_transform(T), transform_points(T, pts))
    assert np.allclose(back, pts, atol=1e-6)
    assert np.allclose(invert_transform(T), np.linalg.inv(T), atol=1e-9)


def test_transform_points_keeps_extra_columns_and_works_on_torch():
    T = make_transform(rotation_z(0.3), [1.0, 2.0, 3.0])
    pts = np.random.default_rng(0).normal(size=(10, 5)).astype(np.float32)
    out = transform_points(T, pts)
    assert out.dtype == np.float32 and np.array_equal(out[:, 3:], pts[:, 3:])
    out_t = transform_points(torch.from_numpy(T), torch.from_numpy(pts))
    assert np.allclose(out_t.numpy(), out, atol=1e-5)


@given(st.floats(-100, 100))
def test_wrap_angle_range(a):
    w = wrap_angle(a)
    assert -np.pi <= w < np.pi
    assert np.isclose(np.cos(w), np.cos(a), atol=1e-6) and np.isclose(np.sin(w), np.sin(a), atol=1e-6)
