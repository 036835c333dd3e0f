"""End-to-end model data and evaluation stages: clip items from the frame/flow caches, zero-shot
target masking, detection mAP on a hand-made case, the zero-shot table."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from e2e_support import build_caches
from pipeline.a2d.annotations import read_annotation
from pipeline.e2e.data import ClipFrames, read_target
from pipeline.e2e.detect_eval import main as detect_eval_main
from pipeline.e2e.labels import IGNORE_ACTION
from pipeline.e2e.predict import write_detections
from pipeline.e2e.zero_shot import main as zero_shot_main
from pipeline.flow.cache import read_flow_cache
from pipeline.frames import read_frames_cache
from pipeline.index import read_index
from pipeline.region.data import collate, frame_records


@pytest.fixture(scope="module")
def caches(tiny_release, tmp_path_factory):
    return build_caches(tiny_release, tmp_path_factory.getbasetemp() / "e2e_caches")


@pytest.fixture(scope="module")
def train_records(caches):
    return frame_records(read_index(caches["index"]), caches["release"], split="train")


def test_clip_items_have_the_documented_shapes_and_content(caches, train_records):
    ds = ClipFrames(train_records, frames_dir=caches["frames"], flow_dir=caches["flow"],
                    num_frames=3)
    assert len(ds) == len(train_records) > 0
    for i in range(len(ds)):
        item, rec = ds[i], train_records[i]
        frames = read_frames_cache(caches["frames"] / f"{rec.video}.h5")
        flow = read_flow_cache(caches["flow"] / f"{rec.video}.h5")
        h, w = frames.height, frames.width
        assert (item["video"], item["frame"]) == (rec.video, rec.frame)
        assert item["images"].shape == (3, 3, h, w) and item["images"].dtype == torch.float32
        assert item["flows"].shape == (3, 3, h, w) and item["flows"].dtype == torch.float32
        window = frames.window(rec.frame, 1)
        assert window[1] == rec.frame
        # RGB in 0..1, CHW, centre = the annotated frame; flows = xym of the same frames
        np.testing.assert_allclose(item["images"][1].numpy().transpose(1, 2, 0) * 255,
                                   frames.frame(rec.frame), atol=1e-3)
        for k, t in enumerate(window):
            np.testing.assert_allclose(item["flows"][k].numpy().transpose(1, 2, 0), flow.xym(t))
        tgt = item["target"]
        n = len(tgt["boxes"])
        assert n > 0 and tgt["boxes"].shape == (n, 4) and tgt["boxes"].dtype == torch.float32
        assert tgt["masks"].shape == (n, h, w) and tgt["masks"].dtype == torch.uint8
        assert tgt["actor"].dtype == torch.int64 and tgt["action"].dtype == torch.int64
        assert ((tgt["actor"] >= 1) & (tgt["actor"] <= 7)).all()
        assert ((tgt["action"] >= 1) & (tgt["action"] <= 9)).all()
        assert (tgt["boxes"][:, 2] > tgt["boxes"][:, 0]).all() and (tgt["boxes"][:, 2] <= w).all()
        ann = read_annotation(rec.mat)  # the label map agrees with the instances
        joint = 10 * tgt["actor"] + tgt["action"]
        assert set(joint.tolist()) == set(np.unique(ann.label[ann.label > 0]).tolist())


def test_single_frame_items_and_batching_of_different_widths(caches, train_records):
    ds = ClipFrames(train_records, frames_dir=caches["frames"], flow_dir=None, num_frames=1,
                    labels=False)
    items = [ds[i] for i in range(len(ds))]
    assert all(it["images"].shape[:2] == (1, 3) and "flows" not in it and "target" not in it
               for it in items)
    widths = {it["images"].shape[-1] for it in items}
    batch = collate(items)  # the engine's collate: clips of different widths stay a list
    assert isinstance(batch["images"], list) and len(batch["images"]) == len(items)
    assert len(widths) >= 1 and batch["frame"] == [r.frame for r in train_records]


def test_clip_longer_than_the_cached_context_is_refused(caches, train_records):
    from pipeline.errors import DataError

    with pytest.raises(DataError, match="context"):
        ClipFrames(train_records, frames_dir=caches["frames"], flow_dir=None, num_frames=5)


def test_zero_shot_masking_removes_exactly_the_chosen_actors_action_labels(caches, train_records):
    full = ClipFrames(train_records, frames_dir=caches["frames"], flow_dir=None, num_frames=1)
    actors = torch.cat([full[i]["target"]["actor"] for i in range(len(full))])
    chosen = int(torch.mode(actors).values)  # the most frequent actor; others must stay
    assert (actors != chosen).any(), "the tiny release should hold more than one actor class"
    masked = ClipFrames(train_records, frames_dir=caches["frames"], flow_dir=None, num_frames=1,
                        zero_shot_actor=chosen)
    n_masked = 0
    for i in range(len(full)):
        a, b = full[i]["target"], masked[i]["target"]
        for key in ("boxes", "actor", "masks"):  # the actor branch still learns everything
            torch.testing.assert_close(a[key], b[key])
        is_chosen = a["actor"] == chosen
        assert (b["action"][is_chosen] == IGNORE_ACTION).all()
        torch.testing.assert_close(b["action"][~is_chosen], a["action"][~is_chosen])
        assert (a["action"] >= 1).all()
        n_masked += int(is_chosen.sum())
    assert n_masked == int((actors == chosen).sum()) > 0


def test_read_target_drops_empty_instances(tmp_path):
    from pipeline.a2d.annotations import FrameAnnotation, write_mat

    label = np.zeros((10, 12), np.uint8)
    label[2:5, 3:7] = 11
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:7] = True  # instance 1 has no pixel left (fully occluded)
    ann = FrameAnnotation(label=label, masks=masks,
                          boxes=np.array([[3, 2, 7, 5], [0, 0, 1, 1]], np.float32),
                          ids=np.array([11, 26]))
    write_mat(tmp_path / "a.mat", ann)
    t = read_target(tmp_path / "a.mat")
    assert t["actor"].tolist() == [1] and t["action"].tolist() == [1]
    assert t["masks"].shape == (1, 10, 12) and int(t["masks"].sum()) == 12


# --- detection mAP --------------------------------------------------------------------------

def _gt_detections(release, index, split="test"):
    """Perfect detections (every GT instance, score 0.9) per test video and frame."""
    table = read_index(index)
    table = table[table.split == split]
    out = {}
    for vid, rows in table.groupby("video"):
        out[vid] = {}
        for r in rows.itertuples():
            ann = read_annotation(release / r.mat)
            n = len(ann.ids)
            probs = np.zeros((n, 9), np.float32)
            probs[np.arange(n), ann.ids % 10 - 1] = 1.0
            out[vid][int(r.frame)] = {
                "boxes": ann.boxes.astype(np.float32).reshape(-1, 4),
                "actor": (ann.ids // 10).astype(np.int64),
                "action": (ann.ids % 10).astype(np.int64),
                "actor_score": np.full(n, 0.9, np.float32),
                "action_score": np.full(n, 1.0, np.float32),
                "score": np.full(n, 0.9, np.float32), "action_probs": probs}
    return out


def _write(dets, folder, zero_shot_actor=0):
    for vid, frames in dets.items():
        write_detections(folder / f"{vid}.h5", video=vid, split="test", detections=frames,
                         config={"test": 1}, source="hand-made",
                         zero_shot_actor=zero_shot_actor)


def test_detection_map_on_a_hand_made_case(caches, tmp_path):
    dets = _gt_detections(caches["release"], caches["index"])
    _write(dets, tmp_path / "perfect")
    out = tmp_path / "perfect.json"
    assert detect_eval_main(["--release", str(caches["release"]), "--index", str(caches["index"]),
                             "--detections-dir", str(tmp_path / "perfect"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for s in ("actor", "action", "joint"):
        assert res[s]["map"] == pytest.approx(100.0)
    assert res["meta"]["split"] == "test" and res["meta"]["units"] == "percent"

    # one confident false positive of actor c (no GT under it), then c's n GT found: precision
    # k / (k + 1) at recall k / n rises, so its monotone envelope is n / (n + 1) at every
    # recall step and AP = n / (n + 1) (all-point interpolation); the other actors stay at 100
    vid = sorted(dets)[0]
    frame = sorted(dets[vid])[0]
    d = dets[vid][frame]
    c, act = int(d["actor"][0]), int(d["action"][0])
    h = read_frames_cache(caches["frames"] / f"{vid}.h5").height
    fp = {"boxes": np.array([[0, 0, 2, 2]], np.float32) + [0, h - 2, 0, h - 2],
          "actor": np.array([c]), "action": np.array([act]),
          "actor_score": np.array([1.0], np.float32), "action_score": np.array([1.0], np.float32),
          "score": np.array([1.0], np.float32), "action_probs": d["action_probs"][:1]}
    dets[vid][frame] = {k: np.concatenate([fp[k], d[k]]).astype(d[k].dtype) for k in d}
    _write(dets, tmp_path / "fp")
    assert detect_eval_main(["--release", str(caches["release"]), "--index", str(caches["index"]),
                             "--detections-dir", str(tmp_path / "fp"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    n = sum(int((f["actor"] == c).sum()) for v in dets.values() for f in v.values()) - 1
    expected = 100.0 * n / (n + 1)
    aps = res["actor"]["ap_by_id"]
    assert aps[str(c)] == pytest.approx(expected)
    others = [v for k, v in aps.items() if int(k) != c and v is not None]
    assert all(v == pytest.approx(100.0) for v in others)
    assert res["actor"]["map"] == pytest.approx((expected + 100.0 * len(others)) / (1 + len(others)))


def test_detection_eval_fails_on_a_missing_video(caches, tmp_path):
    dets = _gt_detections(caches["release"], caches["index"])
    dets.pop(sorted(dets)[0])
    _write(dets, tmp_path / "d")
    assert detect_eval_main(["--release", str(caches["release"]), "--index", str(caches["index"]),
                             "--detections-dir", str(tmp_path / "d"),
                             "--out", str(tmp_path / "x.json")]) == 1
    assert not (tmp_path / "x.json").exists()


# --- zero-shot table ------------------------------------------------------------------------

def _detection_json(path, joint_ap: dict[int, float | None], zs: int):
    path.write_text(json.dumps({
        "actor": {"map": 1.0}, "action": {"map": 1.0},
        "joint": {"map": 1.0, "ap_by_id": {str(k): v for k, v in joint_ap.items()}},
        "meta": {"release": "/r", "synthetic": True, "split": "test",
                 "predictions_provenance": [{"zero_shot_actor": zs}]}}))
    return path


def test_zero_shot_table_averages_valid_actions_and_divides(tmp_path):
    # adult (1): valid pairs 11..19 minus 14 (flying); GT only for 11 and 18 here
    full = _detection_json(tmp_path / "full.json", {11: 80.0, 18: 60.0, 14: None, 21: 50.0}, 0)
    zs_adult = _detection_json(tmp_path / "adult.json", {11: 40.0, 18: 20.0, 21: 10.0}, 1)
    zs_baby = _detection_json(tmp_path / "baby.json", {11: 1.0, 21: 25.0}, 2)
    out = tmp_path / "tab" / "ji_zero_shot"
    assert zero_shot_main(["--full", str(full), "--zero-shot", f"adult={zs_adult}",
                           f"baby={zs_baby}", "--out", str(out)]) == 0
    table = pd.read_csv(out.with_suffix(".csv")).set_index("actor")
    assert table.loc["adult", "ap_full"] == pytest.approx(70.0)
    assert table.loc["adult", "ap_zero_shot"] == pytest.approx(30.0)
    assert table.loc["adult", "r_zs"] == pytest.approx(30.0 / 70.0, abs=1e-4)
    assert table.loc["baby", "r_zs"] == pytest.approx(0.5)
    assert out.with_suffix(".png").stat().st_size > 0
    assert "SYNTHETIC" in out.with_suffix(".md").read_text()
    # a zero-shot file of the wrong model is refused
    assert zero_shot_main(["--full", str(full), "--zero-shot", f"baby={zs_adult}",
                           "--out", str(out)]) == 1
    assert math.isfinite(table.loc["baby", "ap_full"])
