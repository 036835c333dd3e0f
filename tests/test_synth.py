"""The synthetic A2D release: format round trips, determinism, balance, CLI atomicity, motion."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.a2d.annotations import read_annotation, read_col_png
from pipeline.a2d.classes import VALID_PAIRS
from pipeline.a2d.release import Release
from pipeline.a2d.videoset import read_videoset
from pipeline.config import SCHEMA_PATH, stage_config
from pipeline.synth import SynthConfig, generate_release
from pipeline.synth.__main__ import main
from pipeline.synth.appearance import sample_look
from pipeline.synth.motion import sample_track
from pipeline.synth.plan import annotated_frames, plan_dataset
from pipeline.synth.scene import plan_scene, render
from pipeline.synth.writer import render_clip
from pipeline.video import read_frames

from conftest import TINY_SYNTH

#: Smaller still: for tests that generate their own releases.
MICRO = {"videos": 3, "seed": 5, "height": 32, "widths": [48], "frames": [8, 9],
         "annotated": 2, "test_fraction": 0.34}


def _cfg(**overrides) -> SynthConfig:
    return stage_config(SynthConfig, "synthetic", overrides)


def _json(**overrides) -> str:
    """A whole ``synthetic`` section as JSON, as the Snakemake rule passes it."""
    return json.dumps(dataclasses.asdict(_cfg(**overrides)))


def _arrays(root: Path) -> dict[str, np.ndarray]:
    """Every array of a release: annotation fields, colour maps and decoded clip frames."""
    out: dict[str, np.ndarray] = {}
    release = Release.at(root)
    for rec in read_videoset(release.videoset):
        for frame in release.annotated_frames(rec.vid):
            ann = read_annotation(release.mat(rec.vid, frame))
            for field in ("label", "masks", "boxes", "ids"):
                out[f"{rec.vid}/{frame}/{field}"] = getattr(ann, field)
            out[f"{rec.vid}/{frame}/col"] = read_col_png(release.col(rec.vid, frame))
        frames = read_frames(release.clip(rec.vid), range(1, rec.frames + 1))
        out[f"{rec.vid}/clip"] = np.stack([frames[i] for i in sorted(frames)])
    return out


def test_config_fields_are_the_schema_section():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    keys = set(schema["properties"]["synthetic"]["properties"])
    assert {f.name for f in dataclasses.fields(SynthConfig)} == keys
    cfg = _cfg(**TINY_SYNTH)
    assert cfg.widths == (64, 72) and cfg.frames == (12, 14)


@pytest.mark.parametrize("bad", [{"height": 49}, {"widths": [64, 71]}, {"frames": [14, 12]},
                                 {"annotated": 5, "frames": [4, 9]}])
def test_check_rejects_what_the_writer_cannot_honour(bad):
    with pytest.raises(ValueError):
        _cfg(**{**TINY_SYNTH, **bad}).check()


def test_round_trip_every_field(tiny_release):
    """The files hold exactly what was rendered: label map, masks, boxes, ids, colour PNG."""
    cfg = _cfg(**TINY_SYNTH)
    release = Release.at(tiny_release)
    plans = {p.vid: p for p in plan_dataset(cfg)}
    n_instances = Counter()
    for rec in read_videoset(release.videoset):
        clip = render_clip(plans[rec.vid], cfg)
        assert release.annotated_frames(rec.vid) == sorted(clip.annotations)
        for frame, want in clip.annotations.items():
            got = read_annotation(release.mat(rec.vid, frame))
            np.testing.assert_array_equal(got.label, want.label)
            np.testing.assert_array_equal(got.masks, want.masks)
            np.testing.assert_array_equal(got.boxes, want.boxes)
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_array_equal(read_col_png(release.col(rec.vid, frame)), want.label)
            # The GT is self-consistent: masks are disjoint, tile the labelled pixels, and
            # carry the label of their instance; boxes are the masks' tight boxes.
            assert got.masks.sum(axis=0).max(initial=0) <= 1
            np.testing.assert_array_equal(got.masks.any(axis=0), got.label > 0)
            for mask, box, lab in zip(got.masks, got.boxes, got.ids):
                assert mask.any() and np.all(got.label[mask] == lab)
                ys, xs = np.nonzero(mask)
                np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            n_instances[len(got.ids)] += 1
        # The mp4 holds the rendered frames (up to MPEG-4 compression).
        decoded = read_frames(release.clip(rec.vid), range(1, rec.frames + 1))
        err = np.mean([np.mean((decoded[t + 1].astype(float) - img) ** 2)
                       for t, img in enumerate(clip.images)])
        assert 10 * np.log10(255 ** 2 / err) > 25, f"{rec.vid}: clip PSNR too low"
    assert n_instances[1] > 0 and sum(v for k, v in n_instances.items() if k >= 2) > 0


def test_videoset_counts_match_files(tiny_release):
    release = Release.at(tiny_release)
    records = read_videoset(release.videoset)
    assert len(records) == TINY_SYNTH["videos"]
    assert sum(r.test for r in records) == round(TINY_SYNTH["videos"] * TINY_SYNTH["test_fraction"])
    assert any(r.vid.startswith("-") for r in records)
    for rec in records:
        assert len(rec.vid) == 11
        frames = release.annotated_frames(rec.vid)
        assert rec.anno == len(frames) == TINY_SYNTH["annotated"]
        assert frames == annotated_frames(rec.frames, rec.anno) and frames[-1] < rec.frames
        cols = sorted(p.name for p in (tiny_release / "Annotations" / "col" / rec.vid).iterdir())
        assert cols == [f"{f:05d}.png" for f in frames]
        decoded = read_frames(release.clip(rec.vid), range(1, rec.frames + 1))
        assert len(decoded) == rec.frames
        assert decoded[1].shape == (rec.height, rec.width, 3) == (48, rec.width, 3)
        with pytest.raises(Exception, match="decodable frames"):
            read_frames(release.clip(rec.vid), [rec.frames + 1])
        # the video-level label is an instance of the video (the main actor)
        first = read_annotation(release.mat(rec.vid, frames[0]))
        assert rec.label in first.ids.tolist()


def test_only_valid_pairs(tiny_release):
    release = Release.at(tiny_release)
    for rec in read_videoset(release.videoset):
        assert rec.label in VALID_PAIRS
        for frame in release.annotated_frames(rec.vid):
            ann = read_annotation(release.mat(rec.vid, frame))
            assert set(np.unique(ann.label).tolist()) <= {0, *VALID_PAIRS}
            assert set(ann.ids.tolist()) <= set(VALID_PAIRS)


def test_default_dataset_is_balanced():
    cfg = stage_config(SynthConfig, "synthetic")
    plans = plan_dataset(cfg)
    main_actor = Counter(p.labels[0] // 10 for p in plans)
    assert len(main_actor) == 7 and max(main_actor.values()) - min(main_actor.values()) <= 1
    train = Counter(lab for p in plans if not p.test for lab in p.labels)
    test = [p for p in plans if p.test]
    assert set(train) == set(VALID_PAIRS)  # every pair is learnable
    assert len(test) == round(cfg.videos * cfg.test_fraction)
    assert len({p.labels[0] // 10 for p in test}) == 7
    assert len({lab for p in test for lab in p.labels}) >= 15
    assert Counter(len(p.labels) for p in plans).keys() == {1, 2, 3}
    ids = [p.vid for p in plans]
    assert len(set(ids)) == len(ids) and sum(v.startswith("-") for v in ids) >= 5


def test_deterministic_by_seed(tmp_path):
    a, b, c = tmp_path / "a" / "Release", tmp_path / "b" / "Release", tmp_path / "c" / "Release"
    generate_release(a, _cfg(**MICRO))
    generate_release(b, _cfg(**MICRO))
    generate_release(c, _cfg(**{**MICRO, "seed": MICRO["seed"] + 1}))
    assert (a / "videoset.csv").read_text() == (b / "videoset.csv").read_text()
    arr_a, arr_b = _arrays(a), _arrays(b)
    assert arr_a.keys() == arr_b.keys()
    for key in arr_a:
        np.testing.assert_array_equal(arr_a[key], arr_b[key], err_msg=key)
    assert (a / "videoset.csv").read_text() != (c / "videoset.csv").read_text()
    clips_c = {k.split("/")[0]: v for k, v in _arrays(c).items() if k.endswith("/clip")}
    clips_a = [v for k, v in arr_a.items() if k.endswith("/clip")]
    assert not any(x.shape == y.shape and np.array_equal(x, y)
                   for x in clips_a for y in clips_c.values())


def test_cli_writes_atomically(tmp_path, monkeypatch):
    out = tmp_path / "data" / "Release"
    assert main(["--out", str(out), "--config-json", _json(
        **{**TINY_SYNTH, **MICRO, "instances": True})]) == 0
    assert not list(out.parent.glob("*.tmp.*")) and not list(out.parent.glob("*.old.*"))
    assert len(read_videoset(out / "videoset.csv")) == MICRO["videos"]
    assert Release.at(out).instances == out.parent / "a2d_annotation_with_instances"

    # --videos / --seed override the config; an existing release is replaced as a whole.
    assert main(["--out", str(out), "--videos", "2", "--seed", "9", "--config-json",
                 _json(**MICRO)]) == 0
    assert len(read_videoset(out / "videoset.csv")) == 2
    assert len(list((out / "clips320H").iterdir())) == 2
    assert Release.at(out).instances is None  # stale synthetic instances are gone too

    # A run killed half way leaves the previous release untouched and no temporary folder.
    import pipeline.synth.writer as writer

    calls = []

    def dying(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt  # like SIGINT after the first video
        calls.append(1)
        return real(*args, **kwargs)

    real = writer.write_video
    monkeypatch.setattr(writer, "write_video", dying)
    before = (out / "videoset.csv").read_text()
    with pytest.raises(KeyboardInterrupt):
        main(["--out", str(out), "--config-json", _json(**MICRO)])
    assert (out / "videoset.csv").read_text() == before
    assert [p.name for p in out.parent.iterdir()] == ["Release"]


def test_cli_help_and_bad_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--out" in capsys.readouterr().out
    out = tmp_path / "Release"
    odd = _json(**{**MICRO, "height": 34}).replace('"height": 34', '"height": 33')
    assert main(["--out", str(out), "--config-json", odd]) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_instances_are_consistent_within_a_video(tmp_path):
    out = tmp_path / "Release"
    generate_release(out, _cfg(**{**MICRO, "instances": True, "max_actors": 3, "videos": 4}))
    release = Release.at(out)
    assert release.instances == tmp_path / "a2d_annotation_with_instances"
    queries = (tmp_path / "a2d_annotation.txt").read_text().splitlines()
    assert queries[0] == "video_id,instance_id,query"
    query_keys = {tuple(q.split(",")[:2]) for q in queries[1:]}
    for rec in read_videoset(release.videoset):
        seen: dict[int, int] = {}
        for frame in release.annotated_frames(rec.vid):
            mat = read_annotation(release.mat(rec.vid, frame))
            h5 = read_annotation(release.instance_h5(rec.vid, frame))
            np.testing.assert_array_equal(h5.masks, mat.masks)
            np.testing.assert_array_equal(h5.ids, mat.ids)
            for inst, lab in zip(h5.instance.tolist(), h5.ids.tolist()):
                assert seen.setdefault(inst, lab) == lab  # an instance keeps its class
                assert (rec.vid, str(inst)) in query_keys


def test_indexer_accepts_the_release(tiny_release, tmp_path):
    csv = tmp_path / "frames.csv"
    proc = subprocess.run([sys.executable, "-m", "pipeline.index", "--release", str(tiny_release),
                           "--out", str(csv)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    from pipeline.index import read_index

    table = read_index(csv)
    records = read_videoset(tiny_release / "videoset.csv")
    for split in ("train", "test"):
        want = [r for r in records if r.split == split]
        rows = table[table.split == split]
        assert rows.video.nunique() == len(want)
        assert len(rows) == sum(r.anno for r in want)


# ----------------------------------------------------------------------------- motion


def _speeds(action: str, actor: str, n: int = 12, frames: int = 16, height: int = 96):
    """Mean |dx|, |dy| per frame and mean |d angle| of the world track, over n draws."""
    rng = np.random.default_rng(0)
    stats = []
    for _ in range(n):
        look = sample_look(actor, rng, height)
        tr = sample_track(action, look, rng, frames, height)
        stats.append((np.abs(np.diff(tr.x)).mean(), np.abs(np.diff(tr.y)).mean(),
                      np.abs(np.diff(tr.angle)).mean(), tr.y.mean() / height))
    return np.mean(stats, axis=0)


def test_actions_differ_in_motion_statistics():
    run, walk, crawl = (_speeds(a, "adult") for a in ("running", "walking", "crawling"))
    none, eat = _speeds("none", "adult"), _speeds("eating", "adult")
    jump, climb = _speeds("jumping", "adult"), _speeds("climbing", "adult")
    roll, fly = _speeds("rolling", "ball"), _speeds("flying", "bird")
    assert np.all(none[:3] == 0) and eat[0] == 0 and eat[2] == 0
    assert run[0] > 2.5 * walk[0] > 2.5 * 1.2 * crawl[0] > 0
    assert jump[1] > 3 * jump[0] and jump[1] > walk[1] * 3
    assert climb[1] > 0.7 and climb[0] < climb[1]
    assert roll[2] > 0.1 and run[2] == 0  # only rolling turns over time
    assert fly[3] < 0.4 < crawl[3]  # flying high, crawling low


def test_rendered_centroid_speed_follows_the_action():
    """End to end through the renderer (static camera): GT mask centroid speed per frame."""
    def centroid_speed(label: int) -> float:
        speeds = []
        for seed in range(4):
            scene = plan_scene(np.random.default_rng(seed), [label], 48, 64, 10, pan=0.0, noise=0)
            cents = []
            for t in range(10):
                _, _, masks = render(scene, t, np.random.default_rng(0))
                ys, xs = np.nonzero(masks[0])
                cents.append((xs.mean(), ys.mean()))
            speeds.append(np.linalg.norm(np.diff(cents, axis=0), axis=1).mean())
        return float(np.mean(speeds))

    none, walk, run = centroid_speed(19), centroid_speed(18), centroid_speed(17)
    assert none < 0.05
    assert walk > 0.3 and run > 2 * walk


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_embedded_default_test_split_is_large_enough_for_every_seed(seed):
    """Issue 11: the demo's test split holds >= 10 videos, >= 60 annotated frames and all 7
    actors, whatever synthetic.seed is."""
    from pipeline.config import load_config

    section = {**load_config(Path(__file__).resolve().parents[1] / "config.yaml")["synthetic"],
               "seed": seed}
    cfg = stage_config(SynthConfig, "synthetic", section)
    test = [p for p in plan_dataset(cfg) if p.test]
    assert len(test) >= 10 and len(test) * cfg.annotated >= 60
    assert {lab // 10 for p in test for lab in p.labels} == set(range(1, 8))
    assert {p.labels[0] // 10 for p in test} == set(range(1, 8))  # each the main actor somewhere
