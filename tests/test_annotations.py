"""Round trips of the .mat (v7.3), instance .h5 and colour PNG formats, and their bad inputs."""

import h5py
import numpy as np
import pytest

from pipeline.a2d.annotations import (FrameAnnotation, read_annotation, read_col_png,
                                      write_col_png, write_mat)
from pipeline.errors import DataError


def make_annotation(n: int, h: int = 7, w: int = 11) -> FrameAnnotation:
    label = np.zeros((h, w), np.uint8)
    masks = np.zeros((n, h, w), bool)
    boxes = np.zeros((n, 4), np.float32)
    ids = np.array([11, 79, 54][:n], np.int64)
    for i in range(n):
        y0, x0 = i * 2, i * 3
        masks[i, y0:y0 + 3, x0:x0 + 4] = True
        label[masks[i]] = ids[i]
        boxes[i] = (x0, y0, x0 + 4, y0 + 3)
    return FrameAnnotation(label, masks, boxes, ids)


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("with_instance", [False, True])
def test_mat_round_trip(tmp_path, n, with_instance):
    ann = make_annotation(n)
    if with_instance:
        ann.instance = np.arange(n, dtype=np.int64) + 5
    path = tmp_path / "00028.mat"
    write_mat(path, ann, with_instance=with_instance)
    back = read_annotation(path)
    np.testing.assert_array_equal(back.label, ann.label)
    np.testing.assert_array_equal(back.masks, ann.masks)
    np.testing.assert_array_equal(back.boxes, ann.boxes)
    np.testing.assert_array_equal(back.ids, ann.ids)
    if with_instance:
        np.testing.assert_array_equal(back.instance, ann.instance)
    else:
        assert back.instance is None
    assert back.label.dtype == np.uint8 and back.masks.dtype == bool


def test_mat_is_matlab_v73_in_matlab_orientation(tmp_path):
    ann = make_annotation(1)
    path = tmp_path / "00001.mat"
    write_mat(path, ann)
    raw = path.read_bytes()[:128]
    assert raw.startswith(b"MATLAB 7.3 MAT-file") and raw[126:128] == b"IM"
    with h5py.File(path, "r") as f:
        assert f["reS_id"].shape == (11, 7)  # (W, H) as h5py shows MATLAB H x W
        assert f["reMask"].shape == (11, 7)  # one instance: 2-D
        assert f["reBBox"].shape == (4, 1)
        assert f["id"].shape == (1, 1)
        assert f["reMask"].attrs["MATLAB_class"] == b"logical"
        # MATLAB boxes are 1-based inclusive
        np.testing.assert_array_equal(f["reBBox"][:, 0], [1, 1, 4, 3])


def test_mat_written_by_hdf5storage_reads(tmp_path):
    hdf5storage = pytest.importorskip("hdf5storage")
    ann = make_annotation(2)
    path = tmp_path / "00005.mat"
    boxes = ann.boxes.astype(np.float64)
    boxes[:, :2] += 1
    hdf5storage.savemat(str(path), {
        "reS_id": ann.label.astype(np.float64),
        "reMask": ann.masks.transpose(1, 2, 0),
        "reBBox": boxes, "id": ann.ids.astype(np.float64).reshape(2, 1),
    }, format="7.3", matlab_compatible=True)
    back = read_annotation(path)
    np.testing.assert_array_equal(back.label, ann.label)
    np.testing.assert_array_equal(back.masks, ann.masks)
    np.testing.assert_array_equal(back.boxes, ann.boxes)
    np.testing.assert_array_equal(back.ids, ann.ids)


def _write_raw(path, **fields):
    with h5py.File(path, "w") as f:
        for k, v in fields.items():
            f[k] = v


def test_bad_mat_files(tmp_path):
    good = make_annotation(2)
    p = tmp_path / "truncated.mat"
    write_mat(p, good)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated.mat: unreadable or truncated"):
        read_annotation(p)

    p = tmp_path / "unknown_id.mat"
    bad = make_annotation(1)
    _write_raw(p, reS_id=np.full((11, 7), 14.0), reMask=bad.masks[0].T.astype(np.uint8),
               reBBox=np.ones((4, 1)), id=np.array([[11.0]]))
    with pytest.raises(DataError, match="unknown_id.mat: reS_id holds unknown or invalid.*14"):
        read_annotation(p)

    p = tmp_path / "counts.mat"
    _write_raw(p, reS_id=np.zeros((11, 7)), reMask=good.masks.transpose(0, 2, 1).astype(np.uint8),
               reBBox=np.ones((4, 3)), id=np.array([[11.0, 11.0]]))
    with pytest.raises(DataError, match="counts.mat: counts disagree: 2 masks, 3 boxes, 2 ids"):
        read_annotation(p)

    p = tmp_path / "bad_instance_id.mat"
    _write_raw(p, reS_id=np.zeros((11, 7)), reMask=good.masks[0].T.astype(np.uint8),
               reBBox=np.ones((4, 1)), id=np.array([[99.0]]))
    with pytest.raises(DataError, match=r"instance id\(s\) \[99\]"):
        read_annotation(p)

    p = tmp_path / "missing.mat"
    _write_raw(p, reS_id=np.zeros((11, 7)))
    with pytest.raises(DataError, match="missing field"):
        read_annotation(p)


def test_col_png_round_trip_and_errors(tmp_path):
    ann = make_annotation(3)
    ann.label[0, 0] = 14  # any palette id may be written (predictions can be invalid pairs)
    p = tmp_path / "col" / "00003.png"
    write_col_png(p, ann.label)
    np.testing.assert_array_equal(read_col_png(p, size=(7, 11)), ann.label)
    with pytest.raises(DataError, match="00003.png: size 7x11 != expected 8x11"):
        read_col_png(p, size=(8, 11))
    import cv2
    img = cv2.imread(str(p))
    img[1, 1] = (9, 9, 9)
    cv2.imwrite(str(p), img)
    with pytest.raises(DataError, match="00003.png: 1 colour"):
        read_col_png(p)
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="x.png: unreadable PNG"):
        read_col_png(tmp_path / "x.png")
