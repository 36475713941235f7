import numpy as np
import pytest
import torch

from xmkd.eval.segmentation import ConfusionMatrix


def test_nuscenes_test_vector():
    # FORMATS.md 1.7 (coarse ids, 0 = ignore): shift to 0-based classes with 255 = ignore.
    gt = np.array([0, 4, 4, 4, 11, 11, 16, 7])
    pred = np.array([4, 4, 4, 11, 11, 11, 16, 1])
    cm = ConfusionMatrix(16)
    cm.update(np.where(pred == 0, 255, pred - 1), np.where(gt == 0, 255, gt - 1))
    iou = cm.iou("nuscenes")
    assert np.isclose(iou[0], 0) and np.isclose(iou[3], 2 / 3) and np.isclose(iou[6], 0)
    assert np.isclose(iou[10], 2 / 3) and np.isclose(iou[15], 1.0)
    assert np.isnan(iou[[1, 2, 4, 5, 7, 8, 9, 11, 12, 13, 14]]).all()
    assert np.isclose(cm.miou("nuscenes"), 0.466667, atol=1e-6)


def test_semantickitti_test_vector():
    # FORMATS.md 2.4 (xentropy ids, 0 = unlabeled): classes 1..19 -> 0..18.
    gt = np.array([0, 1, 1, 1, 9, 9, 15, 6])
    pred = np.array([1, 1, 1, 9, 9, 9, 15, 0])
    cm = ConfusionMatrix(19)
    cm.update(np.where(pred == 0, 255, pred - 1), np.where(gt == 0, 255, gt - 1))
    assert np.isclose(cm.miou("semantickitti"), 0.122807, atol=1e-6)
    assert np.isclose(cm.accuracy("semantickitti"), 0.833333, atol=1e-6)


def reference_iou_eval(pred, gt, n_classes, ignore):
    """SemanticKITTI's iouEval, re-derived: rows = pred, cols = gt, ignored gt columns zeroed."""
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(conf, (pred, gt), 1)
    conf[:, ignore] = 0
    tp = np.diag(conf)
    fp = conf.sum(1) - tp
    fn = conf.sum(0) - tp
    include = [i for i in range(n_classes) if i not in ignore]
    iou = tp / (tp + fp + fn + 1e-15)
    acc = tp[include].sum() / (tp[include].sum() + fp[include].sum() + 1e-15)
    return iou[include], iou[include].mean(), acc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_predictions_against_semantickitti_iou_eval(seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 20, 5000)  # 0 = unlabeled
    pred = rng.integers(0, 20, 5000)
    correct = rng.random(5000) < 0.3
    pred[correct] = gt[correct]
    gt[gt == 7] = 0  # a class absent from ground truth
    ref_iou, ref_miou, ref_acc = reference_iou_eval(pred, gt, 20, [0])
    cm = ConfusionMatrix(19)
    cm.update(np.where(pred == 0, 255, pred - 1), np.where(gt == 0, 255, gt - 1))
    assert np.allclose(cm.iou("semantickitti"), ref_iou)
    assert np.isclose(cm.miou("semantickitti"), ref_miou) and np.isclose(cm.accuracy("semantickitti"), ref_acc)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_predictions_against_nuscenes_devkit(seed):
    utils = pytest.importorskip("nuscenes.eval.lidarseg.utils")
    rng = np.random.default_rng(seed)
    ref = utils.ConfusionMatrix(17, ignore_idx=0)
    ours = ConfusionMatrix(16)
    for _ in range(3):  # several files, like the devkit's per-sample accumulation
        gt = rng.integers(0, 17, 3000)
        gt[gt == 5] = 0  # a class absent from GT; still predicted -> IoU 0
        gt[gt == 9] = 0
        pred = rng.integers(1, 17, 3000)
        pred[pred == 9] = 10  # class 9 absent from both -> NaN, left out of the mean
        ref.update(gt, pred)
        ours.update(pred - 1, np.where(gt == 0, 255, gt - 1))
    ref_iou = ref.get_per_class_iou()[1:]
    assert np.allclose(ours.iou("nuscenes"), ref_iou, equal_nan=True)
    assert np.isnan(ours.iou("nuscenes")[8])
    assert np.isclose(ours.miou("nuscenes"), ref.get_mean_iou())


def test_torch_inputs_merge_and_table():
    rng = np.random.default_rng(5)
    gt, pred = rng.integers(0, 5, 1000), rng.integers(0, 5, 1000)
    a = ConfusionMatrix(4, class_names=["a", "b", "c", "d"])
    a.update(torch.from_numpy(pred[:500]), torch.from_numpy(gt[:500]))
    b = ConfusionMatrix(4, class_names=["a", "b", "c", "d"])
    b.update(pred[500:], gt[500:])
    whole = ConfusionMatrix(4)
    whole.update(pred, gt)
    assert np.array_equal(a.merge(b).matrix, whole.matrix)
    assert a.all_reduce() is a  # no process group: unchanged
    text = a.table(title="val")
    assert "mIoU" in text and "\n" in text and text.splitlines()[0] == "val"
    d = a.to_dict()
    assert set(d["iou_per_class"]) == {"a", "b", "c", "d"} and 0 <= d["miou"] <= 1
    with pytest.raises(ValueError):
        a.update(np.zeros(3), np.zeros(4))
