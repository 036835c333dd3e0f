"""Region-model features and predictions: native resolution, valid pairs only, PNG palette."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from pipeline.a2d.annotations import read_annotation, read_col_png
from pipeline.a2d.classes import is_valid_label
from pipeline.errors import DataError
from pipeline.region import features as features_stage
from pipeline.region import predict as predict_stage
from pipeline.region.feature_cache import read_feature_cache
from pipeline.region.train_baseline import train_stage1
from pipeline.region.train_region import train_stage2
from region_support import build_caches
from test_region_train import tiny_cfg

SIZE = (37, 51)


@pytest.fixture(scope="module")
def trained(tiny_release, tmp_path_factory):
    """Caches, a few-step stage 1 (two-stream) and stage 2, feature caches of every video."""
    caches = build_caches(tiny_release, tmp_path_factory.mktemp("region_caches"))
    root = tmp_path_factory.mktemp("trained")
    cfg = tiny_cfg(stage1={"iterations": 3}, stage2={"iterations": 3})
    train_stage1(cfg, release=caches["release"], index=caches["index"],
                 frames_dir=caches["frames"], flow_dir=caches["flow"], streams="rgbflow",
                 out=root / "stage1.pt")
    table = pd.read_csv(caches["index"], dtype={"video": str})
    for video in sorted(table.video.unique()):
        # through the CLI, as the rule calls it (leading '-' ids need --video=ID)
        assert features_stage.main([
            "--index", str(caches["index"]), f"--video={video}", "--frames-dir",
            str(caches["frames"]), "--flow-dir", str(caches["flow"]), "--streams", "rgbflow",
            "--stage1", str(root / "stage1.pt"), "--out", str(root / "features" / f"{video}.h5"),
            "--config-json", _cfg_json()]) == 0
    train_stage2(cfg, release=caches["release"], index=caches["index"],
                 features_dir=root / "features", masks_root=caches["masks"],
                 out=root / "stage2.pt")
    test_videos = sorted(table[table.split == "test"].video.unique())
    return {**caches, "root": root, "table": table, "test_videos": test_videos}


def _cfg_json() -> str:
    import json
    from dataclasses import asdict

    return json.dumps(asdict(tiny_cfg()))


def test_feature_cache_has_every_annotated_frame_and_provenance(trained):
    video = trained["test_videos"][0]
    cache = read_feature_cache(trained["root"] / "features" / f"{video}.h5")
    frames = sorted(trained["table"][trained["table"].video == video].frame)
    assert cache.frame_ids.tolist() == frames
    assert cache.channels == 32 and cache.stride == 8  # 2 streams x reduce_to 16
    assert cache.shape[2:] == (5, 7)  # ceil(37/8), ceil(51/8)
    assert cache.input_size == SIZE and cache.split == "test" and cache.streams == "rgbflow"
    assert cache.attrs["stage"] == "features" and len(cache.stage1_sha256) == 64


@pytest.mark.parametrize("model", ["baseline", "region_model", "region_gt"])
def test_predictions_at_native_size_with_valid_pairs_and_pngs(trained, tmp_path, model):
    video = trained["test_videos"][0]
    out, png = tmp_path / f"{video}.h5", tmp_path / "png" / video
    args = ["--index", str(trained["index"]), f"--video={video}", "--out", str(out),
            "--png-dir", str(png), "--config-json", _cfg_json()]
    if model == "baseline":
        args += ["--model", "baseline", "--stage1", str(trained["root"] / "stage1.pt"),
                 "--frames-dir", str(trained["frames"]), "--flow-dir", str(trained["flow"])]
    else:
        args += ["--model", "region", "--stage2", str(trained["root"] / "stage2.pt"),
                 "--features-dir", str(trained["root"] / "features"),
                 "--masks-dir", str(trained["masks"] / model.split("_")[1])]
    assert predict_stage.main(args) == 0
    rows = trained["table"][trained["table"].video == video].sort_values("frame")
    with h5py.File(out, "r", locking=False) as f:
        assert f.attrs["stage"] == "predict" and f.attrs["format_version"] == 1
        labels, frame_ids = f["labels"][:], f["frame_ids"][:]
        assert f["labels"].dtype == np.uint8 and f["labels"].chunks == (1, *labels.shape[1:])
    assert frame_ids.tolist() == rows.frame.tolist()
    for lab, row in zip(labels, rows.itertuples()):
        gt = read_annotation(trained["release"] / row.mat).label
        assert lab.shape == gt.shape == (int(row.height), int(row.width))  # native, not 37x51
        assert is_valid_label(lab).all()
        np.testing.assert_array_equal(read_col_png(png / f"{row.frame:05d}.png", gt.shape), lab)


def test_region_prediction_refuses_features_of_another_stage1(trained, tmp_path):
    video = trained["test_videos"][0]
    bad = tmp_path / "features"
    bad.mkdir()
    src = read_feature_cache(trained["root"] / "features" / f"{video}.h5")
    from pipeline.region.feature_cache import write_feature_cache

    attrs = {k: src.attrs[k] for k in ("video", "split", "streams", "input_height",
                                       "input_width", "native_height", "native_width",
                                       "stride", "channels")}
    write_feature_cache(bad / f"{video}.h5",
                        features=np.stack([src.features(f) for f in src.frame_ids]),
                        frame_ids=src.frame_ids.tolist(), config={}, stage1="other.pt",
                        stage1_sha256="0" * 64, **attrs)
    with pytest.raises(DataError, match="another stage-1"):
        predict_stage.predict_video(model="region", index=trained["index"], video=video,
                                    out=tmp_path / "p.h5", png_dir=None,
                                    stage2=trained["root"] / "stage2.pt", features_dir=bad,
                                    masks_dir=trained["masks"] / "gt", device_name="cpu")
    assert not (tmp_path / "p.h5").exists()


def test_one_call_for_several_videos_loads_once_and_writes_the_same(trained, tmp_path,
                                                                    monkeypatch):
    """A shard job: one process, one checkpoint load, the same caches as one call a video."""
    loads = []
    for module in (features_stage, predict_stage):
        real = module.load_checkpoint
        monkeypatch.setattr(module, "load_checkpoint",
                            lambda *a, real=real: loads.append(a) or real(*a))
    videos = trained["test_videos"]
    assert len(videos) >= 2
    feats = [x for v in videos for x in (f"--video={v}", "--out", str(tmp_path / f"{v}.h5"))]
    assert features_stage.main([
        "--index", str(trained["index"]), "--frames-dir", str(trained["frames"]),
        "--flow-dir", str(trained["flow"]), "--streams", "rgbflow",
        "--stage1", str(trained["root"] / "stage1.pt"), *feats,
        "--config-json", _cfg_json()]) == 0
    assert len(loads) == 1
    for v in videos:
        got = read_feature_cache(tmp_path / f"{v}.h5")
        want = read_feature_cache(trained["root"] / "features" / f"{v}.h5")
        for f in want.frame_ids:
            np.testing.assert_array_equal(got.features(f), want.features(f))
    preds = [x for v in videos for x in (f"--video={v}", "--out", str(tmp_path / "p" / f"{v}.h5"))]
    assert predict_stage.main([
        "--model", "region", "--index", str(trained["index"]),
        "--stage2", str(trained["root"] / "stage2.pt"),
        "--features-dir", str(trained["root"] / "features"),
        "--masks-dir", str(trained["masks"] / "gt"), *preds, "--config-json", _cfg_json()]) == 0
    assert len(loads) == 2 and all((tmp_path / "p" / f"{v}.h5").is_file() for v in videos)
