import numpy as np
import pytest

from xmkd.data.labels import (
    IGNORE_INDEX,
    LABEL_SPACES,
    NUSCENES_FINE_NAMES,
    SEMANTIC_KITTI_LEARNING_MAP,
    get_label_space,
)
from xmkd.errors import XmkdDataError

# FORMATS.md 1.5: the devkit's fine -> coarse LUT (coarse 0 = ignore).
NUSCENES_FINE_TO_COARSE = [0, 0, 7, 7, 7, 0, 7, 0, 0, 1, 0, 0, 8, 0, 2, 3, 3, 4, 5, 0, 0, 6, 9, 10, 11, 12, 13, 14,
                           15, 0, 16, 0]


def test_every_space_is_consistent():
    for name, space in LABEL_SPACES.items():
        assert space.num_classes == len(space.colors) == len(space.submission_ids), name
        assert set(space.raw_to_class.values()) == set(range(space.num_classes)), name
        assert all(raw in space.raw_names for raw in space.raw_to_class), name
    counts = {n: s.num_classes for n, s in LABEL_SPACES.items()}
    assert counts == {"nuscenes16": 16, "semantickitti19": 19, "waymo22": 22, "nuscenes6": 6, "virtualkitti6": 6,
                      "a2d2_10": 10, "semantickitti_a2d2_10": 10, "semantickitti_vkitti6": 6,
                      "semantickitti_nuscenes6": 6}


def test_nuscenes16_matches_devkit_lut_and_submission_ids():
    s = get_label_space("nuscenes16")
    expected = [IGNORE_INDEX if c == 0 else c - 1 for c in NUSCENES_FINE_TO_COARSE]
    assert s.lut.tolist() == expected
    assert s.to_submission(np.arange(16)).tolist() == list(range(1, 17))


def test_nuscenes16_against_devkit_class_mapper():
    utils = pytest.importorskip("nuscenes.eval.lidarseg.utils")

    class FakeNusc:  # LidarsegClassMapper only reads this mapping from the NuScenes object
        lidarseg_name2idx_mapping = {n: i for i, n in NUSCENES_FINE_NAMES.items()}

    mapper = utils.LidarsegClassMapper(FakeNusc())
    fine = np.arange(32)
    coarse = mapper.convert_label(fine)
    ours = get_label_space("nuscenes16").from_raw(fine)
    assert np.array_equal(np.where(coarse == 0, IGNORE_INDEX, coarse - 1), ours)
    names = mapper.coarse_name_2_coarse_idx_mapping
    assert [n for n, i in sorted(names.items(), key=lambda kv: kv[1]) if i > 0] == list(
        get_label_space("nuscenes16").class_names)


def test_semantickitti_round_trip_through_submission_ids():
    s = get_label_space("semantickitti19")
    raw = np.array(list(SEMANTIC_KITTI_LEARNING_MAP))
    classes = s.from_raw(raw)
    for r, c in zip(raw, classes):
        mapped = SEMANTIC_KITTI_LEARNING_MAP[int(r)]
        assert c == (IGNORE_INDEX if mapped == 0 else mapped - 1)
    sub = s.to_submission(np.arange(19))
    assert np.array_equal(s.from_raw(sub), np.arange(19))  # learning_map(learning_map_inv(c)) == c
    # The official evaluator reads raw ids: moving-car (252) is scored as car, written back as 10.
    assert s.to_submission(s.from_raw(np.array([252, 40])) ).tolist() == [10, 40]
    # Instance ids live in the upper 16 bits of a .label value; the reader masks them off first.
    assert s.from_raw(np.array([(7 << 16 | 10)]) & 0xFFFF).tolist() == [0]


def test_merged_spaces():
    a2d2 = get_label_space("a2d2_10")
    assert a2d2.class_names[0] == "car" and a2d2.from_raw(np.array([46, 51, 55])).tolist() == [0, 255, 255]
    vk = get_label_space("virtualkitti6")
    assert vk.from_raw(np.array([0, 1, 5, 11, 12, 13])).tolist() == [0, 0, 255, 5, 255, 255]
    n6 = get_label_space("nuscenes6")
    assert n6.from_raw(np.array([17, 14, 24, 2])).tolist() == [0, 0, 1, 255]
    sk = get_label_space("semantickitti_nuscenes6")
    assert sk.from_raw(np.array([44, 71, 30])).tolist() == [1, 5, 255]


def test_unknown_raw_ids_and_names_fail_clearly():
    s = get_label_space("semantickitti19")
    with pytest.raises(XmkdDataError, match=r"seq/000001.label: labels: unknown SemanticKITTI label id\(s\) \[300\]"):
        s.from_raw(np.array([10, 300]), source="seq/000001.label")
    with pytest.raises(XmkdDataError, match="-1"):
        s.from_raw(np.array([-1]))
    with pytest.raises(KeyError, match="known: a2d2_10"):
        get_label_space("nuscenes17")
    n = get_label_space("nuscenes16")
    with pytest.raises(XmkdDataError, match="vehicle.spaceship"):
        n.lut_for_names({0: "noise", 1: "vehicle.spaceship"})


def test_lut_for_names_maps_by_name_not_index():
    n = get_label_space("nuscenes16")
    shuffled = {0: "vehicle.car", 1: "noise", 2: "static.vegetation"}
    assert n.lut_for_names(shuffled).tolist() == [3, IGNORE_INDEX, 15]


def test_colorize():
    s = get_label_space("nuscenes16")
    rgb = s.colorize(np.array([[3, IGNORE_INDEX]]))
    assert rgb.shape == (1, 2, 3) and rgb[0, 0].tolist() == [255, 158, 0] and rgb[0, 1].tolist() == [0, 0, 0]
