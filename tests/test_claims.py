"""pipeline.claims: the claims table computed from given metric files (golden values)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.claims import CLAIMS, check, load_results, main
from pipeline.errors import DataError


def scores(joint_miou, joint_ave=None, action_ave=None, action_miou=None) -> dict:
    return {"joint": {"miou": joint_miou, "ave": joint_ave if joint_ave is not None else joint_miou,
                      "glo": 90.0},
            "action": {"miou": action_miou if action_miou is not None else joint_miou,
                       "ave": action_ave if action_ave is not None else joint_miou, "glo": 90.0},
            "actor": {"miou": joint_miou, "ave": joint_miou, "glo": 90.0},
            "meta": {"release": "R", "synthetic": True, "split": "test", "n_frames": 61,
                     "n_videos": 11}}


def write(folder: Path, name: str, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data))


@pytest.fixture
def run(tmp_path) -> Path:
    ev = tmp_path / "eval"
    write(ev, "all_background", scores(2.1))
    write(ev, "baseline_rgb", scores(10.0, 12.0, action_ave=20.0))
    write(ev, "region_rgb_model", scores(11.5, 12.0, action_ave=18.0))     # ave tie: not held
    write(ev, "baseline_rgbflow", scores(14.0, 16.0, action_ave=25.0))
    write(ev, "region_rgbflow_model", scores(18.0, 21.0, action_ave=30.0))
    write(ev, "baseline_rgbflow.non_boundary", scores(20.0))
    write(ev, "region_rgbflow_model.non_boundary", scores(22.5))             # gain 2.5 < 4.0
    write(ev, "region_rgbflow_gt", scores(18.0))                             # tie, ">=": held
    write(ev, "e2e_full", scores(2.1, action_miou=9.0))                      # at background
    write(ev, "e2e_no_flow", scores(3.0, action_miou=9.5))
    (tmp_path / "seg.json").write_text(json.dumps({"ap50": 0.61, "ap": 0.3}))
    return tmp_path


def test_golden_verdicts(run):
    table = check(load_results(run / "eval", run / "seg.json"))
    got = dict(zip(table.claim, table.verdict))
    assert len(table) == len(CLAIMS)
    assert got["region > baseline, RGB, joint ave"] == "not held"        # 12.0 > 12.0 is false
    assert got["region > baseline, RGB, joint mIoU"] == "held"
    assert got["region > baseline, RGB + flow, joint mIoU"] == "held"
    assert got["RGB + flow > RGB, baseline, action ave"] == "held"
    assert got["RGB + flow > RGB, region model, action ave"] == "held"
    assert got["GT masks at test time >= segmenter masks, joint mIoU"] == "held"
    t2 = table[table.paper == "Dang T2"].iloc[0]
    assert (t2.left, t2.right, t2.verdict) == (4.0, 2.5, "held")         # 18-14 vs 22.5-20
    assert got["full >= w/o flow, action mIoU"] == "not held"
    assert got["full >= w/o temporal, action mIoU"] == "not run"         # no e2e_no_temporal
    assert got["full >= Mask R-CNN 43-class pairs, joint mIoU"] == "not run"
    assert got["segmenter test mask AP50 >= 0.6"] == "held"
    # e2e_full's joint mIoU equals the all-background value: flagged, whatever the verdict
    flow = table[table.claim == "full >= w/o flow, action mIoU"].iloc[0]
    assert flow.at_background == "e2e_full"
    assert table[table.claim == "region > baseline, RGB, joint mIoU"].iloc[0].at_background == ""


def test_cli_writes_md_and_csv(run):
    out = run / "tables" / "claims"
    out.parent.mkdir()
    assert main(["--eval-dir", str(run / "eval"), "--segmenter", str(run / "seg.json"),
                 "--out", str(out)]) == 0
    md = (run / "tables/claims.md").read_text()
    assert "All-background joint mIoU on this split: 2.1" in md
    assert "| Dang T2 |" in md and "not run" in md and "nan" not in md
    csv = pd.read_csv(run / "tables/claims.csv")
    assert list(csv.verdict).count("held") == 8


def test_unreadable_result_names_file(run, capsys):
    (run / "eval/baseline_rgb.json").write_text("{trunc")
    with pytest.raises(DataError, match="baseline_rgb.json: unreadable"):
        load_results(run / "eval", None)
    assert main(["--eval-dir", str(run / "eval"), "--out", str(run / "c")]) == 1
    assert not (run / "c.md").exists()
