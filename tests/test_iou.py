import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xmkd.geometry.boxes import bev_corners
from xmkd.geometry.iou import bev_iou, box_iou_2d, convex_intersection_area, iou_3d


def random_boxes(rng, n, spread=6.0):
    centre = rng.uniform(-spread, spread, size=(n, 3))
    size = rng.uniform(0.5, 5.0, size=(n, 3))
    yaw = rng.uniform(-np.pi, np.pi, size=(n, 1))
    return np.hstack([centre, size, yaw])


def test_identical_disjoint_and_known_cases():
    a = np.array([[0.0, 0, 0, 2, 2, 2, 0]])
    assert np.allclose(bev_iou(a, a), 1) and np.allclose(iou_3d(a, a), 1)
    far = np.array([[10.0, 0, 0, 2, 2, 2, 0.3]])
    assert bev_iou(a, far)[0, 0] == 0 and iou_3d(a, far)[0, 0] == 0
    # Half-overlapping along x: intersection 1x2, union 6 -> 1/3; in 3D with half the height overlap -> 2/14
    shifted = np.array([[1.0, 0, 0, 2, 2, 2, 0]])
    assert np.isclose(bev_iou(a, shifted)[0, 0], 1 / 3)
    lifted = np.array([[1.0, 0, 1, 2, 2, 2, 0]])
    assert np.isclose(iou_3d(a, lifted)[0, 0], 2.0 / 14)
    # A square and itself rotated by 45 deg overlap in a regular octagon: IoU = sqrt(2)/2 exactly.
    rot = np.array([[0.0, 0, 0, 2, 2, 2, np.pi / 4]])
    assert np.isclose(bev_iou(a, rot)[0, 0], np.sqrt(2) / 2)
    # Rotating by 90 or 180 degrees changes nothing for a square.
    for yaw in (np.pi / 2, np.pi, -np.pi / 2):
        assert np.isclose(bev_iou(a, np.array([[0.0, 0, 0, 2, 2, 2, yaw]]))[0, 0], 1.0)
    # A 4x1 box and the same rotated 90 deg about the common centre: cross of area 1, union 7.
    bar = np.array([[0.0, 0, 0, 4, 1, 1, 0]])
    assert np.isclose(bev_iou(bar, np.array([[0.0, 0, 0, 4, 1, 1, np.pi / 2]]))[0, 0], 1 / 7)
    # Touching edges: zero overlap.
    assert np.isclose(bev_iou(a, np.array([[2.0, 0, 0, 2, 2, 2, 0]]))[0, 0], 0.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_symmetry_bounds_and_aligned(seed):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    for fn in (bev_iou, iou_3d):
        ab, ba = fn(a, b), fn(b, a)
        assert ab.shape == (7, 5)
        assert np.allclose(ab, ba.T, atol=1e-9)
        assert np.all(ab >= 0) and np.all(ab <= 1 + 1e-9)
        assert np.allclose(np.diag(fn(a, a)), 1.0)
        assert np.allclose(fn(a[:5], b, aligned=True), np.diag(fn(a[:5], b)))


def test_against_shapely_polygon_intersection():
    shapely = pytest.importorskip("shapely.geometry")
    rng = np.random.default_rng(7)
    a, b = random_boxes(rng, 60, spread=3), random_boxes(rng, 60, spread=3)
    ours = bev_iou(a, b, aligned=True)
    pa, pb = bev_corners(a), bev_corners(b)
    for i in range(len(a)):
        sa, sb = shapely.Polygon(pa[i]), shapely.Polygon(pb[i])
        inter = sa.intersection(sb).area
        assert np.isclose(ours[i], inter / (sa.area + sb.area - inter), atol=1e-9)


def test_torch_input_and_intersection_area_directly():
    rng = np.random.default_rng(3)
    a, b = random_boxes(rng, 20), random_boxes(rng, 9)
    t = bev_iou(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(t, torch.Tensor) and np.allclose(t.numpy(), bev_iou(a, b))
    sq = torch.tensor([[[0.0, 0], [1, 0], [1, 1], [0, 1]]], dtype=torch.float64)
    tri = torch.tensor([[[0.0, 0], [2, 0], [0, 2], [0, 2]]], dtype=torch.float64)  # degenerate 4th vertex
    assert torch.isclose(convex_intersection_area(sq, tri), torch.tensor([1.0], dtype=torch.float64)).all()
    assert convex_intersection_area(sq[:0], sq[:0]).shape == (0,)


def test_box_iou_2d():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]])
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]])
    iou = box_iou_2d(a, b)
    assert np.allclose(iou[0], [1, 0, 1 / 3])
    assert np.allclose(iou[1], [25 / 175, 0, 50 / 150])
    assert np.allclose(box_iou_2d(a, b[:2], aligned=True), [1, 0])
    assert box_iou_2d(np.zeros((0, 4)), b).shape == (0, 3)
