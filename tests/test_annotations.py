"""Round trips of the .mat (v7.3), instance .h5 and colour PNG formats, and their bad inputs."""

import h5py
import numpy as np
import pytest

from pipeline.a2d.annotations import (FrameAnnotation, mask_boxes, read_annotation,
                                      read_col_png, write_col_png, write_mat)
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
               reBBox=np.ones((4, 2)), id=np.array([[11.0, 11.0, 11.0]]))
    with pytest.raises(DataError, match="counts.mat: counts disagree: 2 masks, 3 ids"):
        read_annotation(p)

    p = tmp_path / "mask_size.mat"
    _write_raw(p, reS_id=np.zeros((11, 8)), reMask=good.masks.transpose(0, 2, 1).astype(np.uint8),
               id=np.array([[11.0, 11.0]]))
    with pytest.raises(DataError,
                       match=r"mask_size.mat: reMask size \(7, 11\) != reS_id size \(8, 11\)"):
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


# -- boxes: the tight boxes of reMask, whatever reBBox holds -------------------------------------
def test_mask_boxes_golden():
    masks = np.zeros((2, 5, 9), bool)
    masks[0, 1, 2] = masks[0, 3, 6] = True  # two pixels: the box spans both, far corner exclusive
    masks[1, 4, 8] = True  # the last pixel of an odd-sized frame
    np.testing.assert_array_equal(mask_boxes(masks), [[2, 1, 7, 4], [8, 4, 9, 5]])
    assert mask_boxes(np.zeros((0, 5, 9), bool)).shape == (0, 4)
    with pytest.raises(ValueError, match="instance 1 has an empty mask"):
        mask_boxes(np.stack([masks[0], np.zeros((5, 9), bool)]))


def _irregular(n: int, h: int, w: int) -> tuple[FrameAnnotation, np.ndarray]:
    """n non-rectangular instances of an (h, w) frame and their hand-computed tight boxes."""
    label = np.zeros((h, w), np.uint8)
    masks = np.zeros((n, h, w), bool)
    ids = np.array([11, 79, 54][:n], np.int64)
    want = np.zeros((n, 4), np.float32)
    for i in range(n):
        x0, y0 = 1 + 4 * i, 2 + i
        masks[i, y0:y0 + 3, x0] = True  # a column and a row: an L, the box is its hull
        masks[i, y0 + 2, x0:x0 + 3] = True
        label[masks[i]] = ids[i]
        want[i] = (x0, y0, x0 + 3, y0 + 3)
    return FrameAnnotation(label, masks, want.copy(), ids), want


def _set_rebbox(path, matlab_boxes: np.ndarray) -> None:
    """Overwrite reBBox with an (N, 4) MATLAB-side array (h5py shows it as (4, N))."""
    with h5py.File(path, "r+") as f:
        del f["reBBox"]
        f["reBBox"] = np.ascontiguousarray(np.asarray(matlab_boxes, np.float64).T)


REBBOX_LAYOUTS = {
    # what a real file might hold instead of our assumed 1-based inclusive [x1 y1 x2 y2]
    "shifted_5px": lambda b: b + [1 + 5, 1 - 2, 5, -2],
    "zero_based_exclusive": lambda b: b,
    "x_y_w_h": lambda b: np.concatenate([b[:, :2] + 1, b[:, 2:] - b[:, :2]], axis=1),
    "y1_x1_y2_x2": lambda b: b[:, [1, 0, 3, 2]] + [1, 1, 0, 0],
}


@pytest.mark.parametrize("layout", sorted(REBBOX_LAYOUTS))
@pytest.mark.parametrize("n, h, w", [(1, 7, 11), (3, 9, 13)])
def test_boxes_come_from_masks_whatever_rebbox_holds(tmp_path, layout, n, h, w):
    ann, want = _irregular(n, h, w)
    path = tmp_path / "00017.mat"
    write_mat(path, ann)
    _set_rebbox(path, REBBOX_LAYOUTS[layout](want.astype(np.float64)))
    back = read_annotation(path)
    np.testing.assert_array_equal(back.boxes, want)
    assert back.boxes.dtype == np.float32
    np.testing.assert_array_equal(back.masks, ann.masks)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_boxes_round_trip_and_rebbox_is_written_1_based(tmp_path, n):
    ann, want = _irregular(n, 9, 13)
    path = tmp_path / "00001.mat"
    write_mat(path, ann)
    np.testing.assert_array_equal(read_annotation(path).boxes, want)
    with h5py.File(path, "r") as f:
        if n:
            np.testing.assert_array_equal(np.asarray(f["reBBox"]).T, want + [1, 1, 0, 0])
        else:
            assert f["reBBox"].size == 0


def test_file_without_rebbox_reads(tmp_path):
    ann, want = _irregular(2, 7, 11)
    path = tmp_path / "no_bbox.mat"
    _write_raw(path, reS_id=ann.label.T.astype(np.float64),
               reMask=ann.masks.transpose(0, 2, 1).astype(np.uint8), id=ann.ids[None].astype(float))
    np.testing.assert_array_equal(read_annotation(path).boxes, want)


@pytest.mark.parametrize("with_instance", [False, True])
def test_empty_instance_masks_are_left_out_with_a_warning(tmp_path, caplog, with_instance):
    ann, want = _irregular(3, 9, 13)
    ann.masks[1] = False  # the middle instance has no pixel (its id stays in the file)
    ann.label[ann.label == 79] = 0
    ann.instance = np.array([4, 5, 6], np.int64)
    path = tmp_path / "00009.h5"
    write_mat(path, ann, with_instance=with_instance)
    back = read_annotation(path)
    np.testing.assert_array_equal(back.ids, [11, 54])
    np.testing.assert_array_equal(back.boxes, want[[0, 2]])
    np.testing.assert_array_equal(back.masks, ann.masks[[0, 2]])
    if with_instance:
        np.testing.assert_array_equal(back.instance, [4, 6])
    assert f"{path}: left out 1 instance(s) with an empty reMask (ids [79])" in caplog.text


def test_single_empty_instance_gives_zero_instances(tmp_path, caplog):
    ann, _ = _irregular(1, 7, 11)
    ann.masks[:] = False
    ann.label[:] = 0
    path = tmp_path / "00002.mat"
    write_mat(path, ann)  # one instance: the 2-D reMask case
    back = read_annotation(path)
    assert back.masks.shape == (0, 7, 11) and back.boxes.shape == (0, 4) and len(back.ids) == 0
    assert "00002.mat: left out 1 instance(s)" in caplog.text


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
