"""Stage flow: encodings, DIS accuracy, ptlflow with a local checkpoint, cache format, failures."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest

from pipeline.config import stage_config
from pipeline.errors import DataError
from pipeline.flow.__main__ import main
from pipeline.flow.cache import read_flow_cache, write_flow_cache
from pipeline.flow.dis import DISFlow
from pipeline.flow.encode import XYM_SCALE_PX, flow_to_rgb, flow_to_xym
from pipeline.flow.stage import FlowConfig, build_backend, compute_flow
from pipeline.frames import FramesConfig, write_frames_cache
from test_frames import textured_clip


def flow_cfg(**overrides) -> FlowConfig:
    return stage_config(FlowConfig, "flow", overrides)


def make_frames_cache(path, n_frames=10, annotated=(1, 5, 10), context=1, size=(40, 56),
                      step=(1, 0)):
    """A frames cache of a synthetic clip translating by ``step`` px per frame."""
    clip = textured_clip(n_frames, *size, step=step)
    cfg = stage_config(FramesConfig, "frames", {"context": context})
    from pipeline.frames import frames_to_keep

    keep = frames_to_keep(list(annotated), context, n_frames)
    write_frames_cache(path, video="v1", split="train", frames={t: clip[t - 1] for t in keep},
                       annotated=list(annotated), n_frames=n_frames, fps=24.0, cfg=cfg)
    return path


# --- encodings -------------------------------------------------------------------------------

def test_flow_to_xym_values_and_batch_dims():
    flow = np.zeros((2, 3, 4, 2), np.float32)
    flow[0, 1, 2] = (3.0, -4.0)
    xym = flow_to_xym(flow)
    assert xym.shape == (2, 3, 4, 3) and xym.dtype == np.float32
    np.testing.assert_allclose(xym[0, 1, 2], np.array([3, -4, 5]) / XYM_SCALE_PX)
    assert not xym[1].any()
    with pytest.raises(ValueError):
        flow_to_xym(np.zeros((3, 4, 3)))


def test_flow_to_rgb_middlebury_colours():
    flow = np.zeros((1, 4, 2), np.float32)
    flow[0, 1] = (1, 0)    # right: wheel index 0, pure red
    flow[0, 2] = (0, -1)   # up: between wheel entries 40 and 41, (78, 0, 255) and (98, 0, 255)
    flow[0, 3] = (-1, 0)   # left: wheel index 27, cyan-blue segment: (0, 255 - 46, 255)
    rgb = flow_to_rgb(flow)
    assert rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [255, 255, 255]  # no motion is white
    assert rgb[0, 1].tolist() == [255, 0, 0]
    assert rgb[0, 2].tolist() == [88, 0, 255]
    assert rgb[0, 3].tolist() == [0, 209, 255]
    # fixed range: half the range is half saturated, beyond it the colour darkens
    half = flow_to_rgb(np.array([[[1.0, 0.0]]]), max_magnitude=2.0)
    assert half[0, 0].tolist() == [255, 127, 127]
    over = flow_to_rgb(np.array([[[4.0, 0.0]]]), max_magnitude=2.0)
    assert over[0, 0].tolist() == [191, 0, 0]
    # batch dims: each image is normalised on its own
    both = flow_to_rgb(np.stack([flow, 3 * flow]))
    np.testing.assert_array_equal(both[0], rgb)
    np.testing.assert_array_equal(both[1], rgb)


# --- DIS --------------------------------------------------------------------------------------

def test_dis_recovers_a_known_translation():
    rng = np.random.default_rng(1)
    big = cv2.GaussianBlur(rng.integers(0, 256, (96, 120, 3)).astype(np.uint8), (0, 0), 2.0)
    first = big[10:74, 10:90]
    second = big[12:76, 7:87]  # content moves by (dx, dy) = (3, -2)
    flow = DISFlow("medium")(first[None], second[None])[0]
    assert flow.shape == (64, 80, 2) and flow.dtype == np.float32
    inner = flow[8:-8, 8:-8].reshape(-1, 2)
    err = np.linalg.norm(inner - np.array([3.0, -2.0]), axis=1)
    assert np.median(err) < 0.3, np.median(err)


def test_unknown_backend_and_preset_are_config_errors():
    with pytest.raises(ValueError, match="unknown flow.backend"):
        build_backend(flow_cfg(backend="farneback"))
    with pytest.raises(ValueError, match="unknown DIS preset"):
        DISFlow("slow")


# --- the stage --------------------------------------------------------------------------------

def test_stage_round_trip_with_dis(tmp_path):
    frames = make_frames_cache(tmp_path / "frames.h5", context=1)
    out = tmp_path / "flow" / "v1.h5"
    assert main(["--frames", str(frames), "--out", str(out), "--threads", "1"]) == 0
    cache = read_flow_cache(out)
    assert cache.frame_ids.tolist() == [1, 2, 4, 5, 6, 9, 10]
    assert cache.pair_of(1) == (1, 2) and cache.pair_of(9) == (9, 10)
    assert cache.pair_of(10) == (9, 10)  # the clip's last frame pairs backwards
    assert (cache.video, cache.backend, cache.model) == ("v1", "dis", "dis-medium")
    assert cache.checkpoint == ""
    # the synthetic clip moves one pixel right per frame
    err = np.linalg.norm(cache.flow(5)[6:-6, 6:-6] - np.array([1.0, 0.0]), axis=-1)
    assert np.median(err) < 0.3
    assert cache.xym(5).shape == (40, 56, 3) and cache.rgb(5).dtype == np.uint8
    with pytest.raises(KeyError, match="no flow for frame 3"):
        cache.flow(3)
    cache.close()  # HDF5 refuses a second open with other locking flags while one is open
    with h5py.File(out) as f:
        assert f["flow"].dtype == np.float16 and f["flow"].chunks == (1, 40, 56, 2)
        assert f.attrs["stage"] == "flow" and '"backend":"dis"' in f.attrs["config_json"]


def test_cache_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    flows = rng.normal(0, 8, (3, 5, 7, 2)).astype(np.float16)
    path = tmp_path / "f.h5"
    write_flow_cache(path, flows=flows, frame_ids=[2, 3, 7], pairs=[(2, 3), (3, 4), (6, 7)],
                     config=flow_cfg(), source="test", video="-v", backend="dis",
                     model="dis-medium", checkpoint="")
    cache = read_flow_cache(path)
    for i, fid in enumerate([2, 3, 7]):
        np.testing.assert_array_equal(cache.flow(fid), flows[i].astype(np.float32))
    assert cache.pair.tolist() == [[2, 3], [3, 4], [6, 7]] and cache.video == "-v"


class NaNBackend:
    name, model, checkpoint, batch_size = "nan", "nan", "", 2

    def __call__(self, first, second):
        out = np.zeros((*first.shape[:3], 2), np.float32)
        out[-1, 0, 0, 0] = np.nan
        return out


def test_nan_flow_is_a_data_error_and_not_cached(tmp_path):
    frames = make_frames_cache(tmp_path / "frames.h5")
    out = tmp_path / "flow.h5"
    with pytest.raises(DataError) as err:
        compute_flow(frames, out, flow_cfg(), backend=NaNBackend())
    assert err.value.path == str(frames) and "NaN" in err.value.problem
    assert not out.exists() and list(tmp_path.glob("flow.h5*")) == []
    # values float16 cannot hold are refused the same way
    with pytest.raises(ValueError, match="non-finite"):
        write_flow_cache(out, flows=np.full((1, 2, 2, 2), 1e6), frame_ids=[1], pairs=[(1, 2)],
                         config={}, source="", video="v", backend="x", model="x", checkpoint="")
    assert not out.exists()


def test_ptlflow_without_weights_is_refused(tmp_path):
    frames = make_frames_cache(tmp_path / "frames.h5")
    with pytest.raises(ValueError, match="needs flow.checkpoint"):
        compute_flow(frames, tmp_path / "o.h5", flow_cfg(backend="ptlflow"))
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(DataError) as err:
        compute_flow(frames, tmp_path / "o.h5", flow_cfg(backend="ptlflow",
                                                         checkpoint=str(missing)))
    assert err.value.path == str(missing)
    assert main(["--frames", str(frames), "--out", str(tmp_path / "o.h5"),
                 "--config-json", '{"backend": "ptlflow", "dis_preset": "medium", "model": '
                 '"flownets", "checkpoint": null, "batch_size": 2, "device": "cpu"}']) == 1
    assert not (tmp_path / "o.h5").exists()


def test_ptlflow_end_to_end_with_a_local_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    ptlflow = pytest.importorskip("ptlflow")
    torch.manual_seed(0)
    net = ptlflow.get_model("flownets")
    ckpt = tmp_path / "flownets.ckpt"
    torch.save({"state_dict": net.state_dict(), "hyper_parameters": {}}, ckpt)
    frames = make_frames_cache(tmp_path / "frames.h5", n_frames=6, annotated=(2, 6), context=1,
                               size=(64, 64))
    out = tmp_path / "flow.h5"
    cfg = flow_cfg(backend="ptlflow", model="flownets", checkpoint=str(ckpt), batch_size=3,
                   device="cpu")
    backend = build_backend(cfg)
    compute_flow(frames, out, cfg, backend=backend)
    cache = read_flow_cache(out)
    assert cache.frame_ids.tolist() == [1, 2, 3, 5, 6]
    assert (cache.backend, cache.model, cache.checkpoint) == ("ptlflow", "flownets", str(ckpt))
    with h5py.File(out) as f:
        assert len(f.attrs["checkpoint_sha256"]) == 64
        flows = f["flow"][:]
    assert flows.shape == (5, 64, 64, 2) and np.isfinite(flows).all()
    # the backend feeds the loaded weights BGR 0..1 (B, 2, 3, H, W): compare with a direct call
    from pipeline.frames import read_frames_cache

    fc = read_frames_cache(frames)
    pair = np.stack([fc.frame(2), fc.frame(3)])[..., ::-1].astype(np.float32) / 255
    images = torch.from_numpy(np.ascontiguousarray(pair)).permute(0, 3, 1, 2)[None]
    reloaded = ptlflow.get_model("flownets", ckpt_path=str(ckpt)).eval()
    with torch.inference_mode():
        direct = reloaded({"images": images})["flows"][0, 0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(cache.flow(2), direct.astype(np.float16).astype(np.float32),
                               rtol=0, atol=1e-3 + 2e-3 * np.abs(direct).max())
    # a checkpoint whose keys do not fit the model names the checkpoint
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, bad)
    with pytest.raises(DataError) as err:
        build_backend(flow_cfg(backend="ptlflow", checkpoint=str(bad), device="cpu"))
    assert err.value.path == str(bad)
