import numpy as np
import pytest

from xmkd.data.frame import Boxes, CameraView, Frame
from xmkd.errors import XmkdDataError


def camera(**kw):
    args = dict(name="CAM_FRONT", image=np.zeros((36, 64, 3), np.uint8),
                K=np.array([[50.0, 0, 32], [0, 50, 18], [0, 0, 1]]), T_cam_lidar=np.eye(4))
    args.update(kw)
    return CameraView(**args)


def frame(**kw):
    args = dict(frame_id="f0", points=np.zeros((10, 4), np.float32), labels=np.zeros(10, np.int64),
                cameras={"CAM_FRONT": camera()}, source="data/f0.bin")
    args.update(kw)
    return Frame(**args)


def test_valid_frame():
    f = frame(boxes=Boxes(np.zeros((2, 7)), np.array(["car", "truck"])))
    assert f.num_points == 10 and f.cameras["CAM_FRONT"].image_size == (64, 36)
    assert np.array_equal(f.field("intensity"), np.zeros(10, np.float32))
    assert len(f.boxes.select(np.array([True, False]))) == 1


@pytest.mark.parametrize(
    "kwargs, field, words",
    [
        (dict(points=np.full((10, 4), np.nan, np.float32)), "points", "NaN"),
        (dict(points=np.zeros((10, 4), np.float64)), "points", "float32"),
        (dict(points=np.zeros((10, 2), np.float32)), "points", "3 columns"),
        (dict(labels=np.zeros(9, np.int64)), "labels", "9 labels for 10 points"),
        (dict(labels=np.zeros(10, np.int32)), "labels", "int64"),
        (dict(point_fields=("x", "y", "z")), "point_fields", "4 point columns"),
        (dict(instance_ids=np.zeros(3, np.int64)), "instance_ids", "3 instance ids"),
        (dict(ego_pose=np.ones((4, 4))), "ego_pose", "last row"),
    ],
)
def test_bad_frames_name_the_field(kwargs, field, words):
    with pytest.raises(XmkdDataError) as err:
        frame(**kwargs)
    msg = str(err.value)
    assert err.value.field == field and words in msg and "data/f0.bin" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(image=np.zeros((36, 64), np.uint8)), "image"),
        (dict(image=np.zeros((36, 64, 3), np.float32)), "image"),
        (dict(K=np.eye(3) * -1), "K"),
        (dict(T_cam_lidar=np.diag([1.0, 1, 2, 1])), "T_cam_lidar"),
        (dict(labels=np.zeros((35, 64), np.int64)), "labels"),
        (dict(depth=np.zeros((36, 64), np.float64)), "depth"),
    ],
)
def test_bad_cameras(kwargs, field):
    with pytest.raises(XmkdDataError) as err:
        camera(**kwargs)
    assert err.value.field == field


def test_bad_boxes_and_camera_name_mismatch():
    with pytest.raises(XmkdDataError, match="names"):
        Boxes(np.zeros((2, 7)), np.array(["car"]))
    with pytest.raises(XmkdDataError, match="negative box size"):
        Boxes(np.array([[0, 0, 0, -1, 1, 1, 0.0]]), np.array(["car"]))
    with pytest.raises(XmkdDataError, match="boxes"):
        Boxes(np.zeros((2, 6)), np.array(["a", "b"]))
    with pytest.raises(XmkdDataError, match="named"):
        frame(cameras={"CAM_BACK": camera()})
