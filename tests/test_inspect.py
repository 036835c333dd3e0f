"""The inspector prints any cache's tree and renders frames, flow, masks and label maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.a2d.classes import PALETTE
from pipeline.config import stage_config
from pipeline.errors import DataError
from pipeline.flow.cache import write_flow_cache
from pipeline.flow.encode import flow_to_rgb
from pipeline.flow.stage import FlowConfig
from pipeline.h5cache import create_cache
from pipeline.inspect import describe, main
from test_flow import make_frames_cache

H, W = 40, 56


def read_png(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[..., ::-1]  # RGB


@pytest.fixture()
def frames_h5(tmp_path):
    return make_frames_cache(tmp_path / "frames.h5", n_frames=10, annotated=(2, 6), context=1,
                             size=(H, W))


def test_prints_tree_with_layout_and_pretty_config(frames_h5, capsys):
    assert main([str(frames_h5)]) == 0
    out = capsys.readouterr().out
    assert f"frames: (8, {H}, {W}, 3) uint8 chunks=(1, {H}, {W}, 3) compression=none" in out
    assert "frame_ids: (8,) int32" in out and "annotated: (2,) int32" in out
    assert "@stage = frames" in out and "@context = 1" in out
    assert '@config_json = {\n        "context": 1\n      }' in out  # pretty-printed JSON
    assert '"numpy":' in out  # versions_json as well


def test_renders_a_frame_exactly(frames_h5, tmp_path):
    from pipeline.frames import read_frames_cache

    png = tmp_path / "f.png"
    assert main([str(frames_h5), "--render", str(png), "--frame", "6"]) == 0
    with read_frames_cache(frames_h5) as cache:
        np.testing.assert_array_equal(read_png(png), cache.frame(6))
    assert main([str(frames_h5), "--render", str(png), "--frame", "10"]) == 1  # not cached (1..8 are)


def test_renders_flow_beside_its_frame(frames_h5, tmp_path):
    flows = np.zeros((2, H, W, 2), np.float32)
    flows[0, :, :, 0] = np.linspace(-2, 2, W)
    path = tmp_path / "flow.h5"
    write_flow_cache(path, flows=flows, frame_ids=[2, 6], pairs=[(2, 3), (6, 7)],
                     config=stage_config(FlowConfig, "flow"), source="t", video="v1",
                     backend="dis", model="dis-medium", checkpoint="")
    png = tmp_path / "flow.png"
    assert main([str(path), "--render", str(png)]) == 0
    np.testing.assert_array_equal(read_png(png), flow_to_rgb(flows[0].astype(np.float16)))
    assert main([str(path), "--render", str(png), "--frame", "6", "--frames", str(frames_h5)]) == 0
    img = read_png(png)
    assert img.shape == (H, 2 * W, 3)
    assert (img[:, W:] == 255).all()  # frame 6 has no motion: white


def write_masks(path, frames_with_regions: dict[int, int]):
    """A masks cache (docs/architecture.md layout) with rectangular regions per frame."""
    with create_cache(path, stage="masks", module="pipeline.inspect", config={},
                      format_version=1, video="v1", height=H, width=W) as f:
        for frame, n in frames_with_regions.items():
            g = f.create_group(f"{frame:05d}")
            masks = np.zeros((n, H, W), np.uint8)
            boxes = np.zeros((n, 4), np.float32)
            for i in range(n):
                x1, y1 = 4 + 20 * i, 6
                masks[i, y1:y1 + 16, x1:x1 + 12] = 255
                boxes[i] = (x1, y1, x1 + 12, y1 + 16)
            g.create_dataset("boxes", data=boxes)
            g.create_dataset("scores", data=np.linspace(0.9, 0.5, n).astype(np.float32))
            g.create_dataset("labels", data=np.arange(1, n + 1, dtype=np.int64))
            g.create_dataset("masks", data=masks, compression="gzip", chunks=(1, H, W)
                             if n else None)


def test_renders_masks_over_the_frame(frames_h5, tmp_path, capsys):
    path = tmp_path / "masks.h5"
    write_masks(path, {2: 2, 6: 0})
    png = tmp_path / "m.png"
    assert main([str(path), "--render", str(png), "--frames", str(frames_h5)]) == 0
    out = capsys.readouterr().out
    assert "00002/" in out and "compression=gzip(4)" in out
    from pipeline.frames import read_frames_cache

    with read_frames_cache(frames_h5) as cache:
        frame = cache.frame(2).astype(int)
    img = read_png(png).astype(int)
    assert (np.abs(img[30:, :] - frame[30:, :]) <= 0).all()  # outside every region: untouched
    assert np.abs(img[14, 8] - frame[14, 8]).sum() > 30  # inside region 0: tinted
    assert (np.abs(img[14, 28] - img[14, 8]) > 0).any()  # region 1 has another colour
    # an empty frame renders the plain frame; without --frames it draws on black
    assert main([str(path), "--render", str(png), "--frame", "6", "--frames", str(frames_h5)]) == 0
    with read_frames_cache(frames_h5) as cache:
        np.testing.assert_array_equal(read_png(png), cache.frame(6))
    assert main([str(path), "--render", str(png), "--frame", "2"]) == 0
    assert read_png(png)[35, 50].tolist() == [0, 0, 0]


def test_renders_label_maps_in_the_a2d_palette(tmp_path):
    labels = np.zeros((1, H, W), np.uint8)
    labels[0, 5:15, 5:15] = 11
    path = tmp_path / "pred.h5"
    with create_cache(path, stage="predict", module="pipeline.inspect", config={},
                      format_version=1, video="v1") as f:
        f.create_dataset("labels", data=labels, compression="gzip", chunks=(1, H, W))
        f.create_dataset("frame_ids", data=np.array([4], np.int32))
    png = tmp_path / "p.png"
    assert main([str(path), "--render", str(png)]) == 0
    img = read_png(png)
    assert img[0, 0].tolist() == [0, 0, 0]
    np.testing.assert_allclose(img[10, 10], 0.65 * np.array(PALETTE[11]), atol=1)


def test_not_hdf5_is_a_data_error(tmp_path, caplog):
    bad = tmp_path / "x.h5"
    bad.write_text("not hdf5")
    with pytest.raises(DataError):
        describe(bad)
    assert main([str(bad)]) == 1 and str(bad) in caplog.text
