"""Paper-layout tables: our numbers beside the published ones, with the dataset label line."""

import json

import numpy as np
import pandas as pd
import pytest

from pipeline import paper_numbers as paper
from pipeline.a2d.classes import JOINT_IDS
from pipeline.evaluate import result_json
from pipeline.metrics import VIDEO_AVERAGED_LABEL, ConfusionMatrix, VideoAveragedIoU
from pipeline.tables import JI_BOXES_FILLED, TABLES, main


def eval_json(path, seed=0, pixels="all", release="/data/synthetic/Release", synthetic=True):
    """A real evaluation JSON (pipeline.evaluate's writer) of a noisy prediction."""
    rng = np.random.default_rng(seed)
    gt = rng.choice(np.array(JOINT_IDS, np.uint8), (23, 31))
    pred = gt.copy()
    pred[rng.random(gt.shape) < 0.4] = 0
    cm, va = ConfusionMatrix(), VideoAveragedIoU()
    cm.update(gt, pred)
    va.update("v", gt, pred)
    meta = {"release": release, "synthetic": synthetic, "split": "test", "n_frames": 1,
            "n_videos": 1, "predictions": "/runs/preds", "pixels": pixels,
            "predictions_provenance": [{"source": "ckpt.pt", "config_sha256": "c0ffee12",
                                        "code_version": "0.1.0", "code_hash": "abcd"}],
            "config": {"split": "test", "boundary_width": 15, "missing_as_background": False}}
    result = result_json(cm, meta, va if pixels == "all" else None)
    path.write_text(json.dumps(result))
    return result


def make(tmp_path, name, **inputs):
    out = tmp_path / "tables" / name
    rc = main(["--name", name, "--inputs", *(f"{k}={v}" for k, v in inputs.items()),
               "--out", str(out)])
    if rc != 0:
        return rc, None, None
    return rc, (tmp_path / "tables" / f"{name}.md").read_text(), pd.read_csv(f"{out}.csv")


def cell(frame, method, source, column):
    row = frame[(frame.method == method) & (frame.source == source)]
    assert len(row) == 1, (method, source)
    return row.iloc[0][column]


def test_dang_table1_holds_paper_and_ours_and_the_label_line(tmp_path):
    ours = eval_json(tmp_path / "ours.json")
    rc, md, csv = make(tmp_path, "dang_table1", ours_rgbflow=tmp_path / "ours.json")
    assert rc == 0
    assert "SYNTHETIC dataset" in md and "/data/synthetic/Release" in md
    assert "c0ffee12" in md and "paper (A2D)" in md
    # paper row, published numbers
    assert "| Ours (RGB + flow) | paper (A2D) | 95.3 | 93.4 | 93.0 | 86.0 | 70.7 | 56.4 | 68.1 " \
           "| 51.1 | 38.6 |" in md
    assert cell(csv, "Baseline (RGB only)", "paper (A2D)", "ave joint") == 42.7
    # our row, our numbers
    assert cell(csv, "Ours (RGB + flow)", "ours", "mIoU joint") == pytest.approx(
        ours["joint"]["miou"], abs=0.05)
    assert f"| Ours (RGB + flow) | ours | {ours['actor']['glo']:.1f} |" in md
    assert "SYNTHETIC dataset" in cell(csv, "Ours (RGB + flow)", "ours", "dataset")
    # a variant not run: "-" in the markdown, empty in the CSV
    assert "| Ours (RGB only) | ours | – | – |" in md
    assert np.isnan(cell(csv, "Ours (RGB only)", "ours", "glo actor"))


VA_JOINT = f"{VIDEO_AVERAGED_LABEL} (joint)"


def test_video_averaged_in_its_own_columns(tmp_path):
    ours = eval_json(tmp_path / "ours.json", seed=4)
    rc, md, csv = make(tmp_path, "dang_table1", ours_rgbflow=tmp_path / "ours.json")
    assert rc == 0
    assert [c for c in csv.columns if "video-averaged" in c] == [
        f"{VIDEO_AVERAGED_LABEL} ({s})" for s in ("joint", "actor", "action")]
    assert "per-frame, video-averaged IoU, as MED-VT reports; not the A2D protocol (joint)" in md
    for s in ("joint", "actor", "action"):
        assert cell(csv, "Ours (RGB + flow)", "ours", f"{VIDEO_AVERAGED_LABEL} ({s})") == \
            pytest.approx(ours["video_averaged"][s], abs=0.05)
    # not the protocol's mIoU, and the papers report none
    assert ours["video_averaged"]["joint"] != pytest.approx(ours["joint"]["miou"], abs=0.5)
    assert np.isnan(cell(csv, "Ours (RGB + flow)", "paper (A2D)", VA_JOINT))
    rc, md, csv = make(tmp_path, "ji_table1", ours=tmp_path / "ours.json")
    assert cell(csv, "Ours", "ours", VA_JOINT) == pytest.approx(ours["video_averaged"]["joint"],
                                                                abs=0.05)
    # per-category, detection and non-boundary tables have no such column
    for name in ("dang_table2", "dang_table5", "ji_table2"):
        rc, md, csv = make(tmp_path, name)
        assert not [c for c in csv.columns if "video-averaged" in c], name


def test_ji_box_filling_row_is_named_for_what_it_is(tmp_path):
    eval_json(tmp_path / "no_mask.json", seed=5)
    rc, md, csv = make(tmp_path, "ji_table3", no_mask_sm=tmp_path / "no_mask.json")
    assert rc == 0
    ours = csv[csv.source == "ours"]
    assert JI_BOXES_FILLED == "Ours w/o Mask, boxes filled"
    assert JI_BOXES_FILLED in set(ours.method) and "SM" not in " ".join(ours.method)
    assert not np.isnan(cell(csv, JI_BOXES_FILLED, "ours", "joint mIoU"))
    # the paper's number stays beside it, under the paper's name, marked as SharpMask
    assert cell(csv, "Ours w/o Mask + SM (the paper's SharpMask row)", "paper (A2D)",
                "joint mIoU") == 32.4
    assert f"| {JI_BOXES_FILLED} | ours |" in md


def test_dang_table2_needs_non_boundary_results(tmp_path, caplog):
    eval_json(tmp_path / "all.json")
    rc, *_ = make(tmp_path, "dang_table2", ours_nb=tmp_path / "all.json")
    assert rc == 1 and "non-boundary" in caplog.text and str(tmp_path / "all.json") in caplog.text
    nb = eval_json(tmp_path / "nb.json", pixels="non-boundary")
    rc, md, csv = make(tmp_path, "dang_table2", ours_nb=tmp_path / "nb.json")
    assert rc == 0
    assert cell(csv, "Ours (Non-Boundary)", "paper (A2D)", "ave joint") == 57.8
    assert cell(csv, "Ours (Non-Boundary)", "ours", "ave joint") == pytest.approx(
        nb["joint"]["ave"], abs=0.05)


def test_dang_table3_rows(tmp_path):
    eval_json(tmp_path / "gt.json", seed=3)
    rc, md, csv = make(tmp_path, "dang_table3", gt=tmp_path / "gt.json")
    assert rc == 0
    assert cell(csv, "A2D + GT / GT", "paper (A2D)", "mIoU actor") == 80.9
    assert cell(csv, "COCO + GT / COCO", "paper (A2D)", "glo joint") == 92.6
    assert not np.isnan(cell(csv, "A2D + GT / GT", "ours", "glo joint"))


def test_dang_table5_per_category(tmp_path):
    ours = eval_json(tmp_path / "ours.json", seed=1)
    rc, md, csv = make(tmp_path, "dang_table5", ours_rgb=tmp_path / "ours.json")
    assert rc == 0
    assert cell(csv, "Ours (RGB + flow)", "paper (A2D)", "ball-flying") == 26.7
    assert cell(csv, "Baseline (RGB only)", "paper (A2D)", "BG") == 98.1
    assert cell(csv, "Baseline (RGB only)", "paper (A2D)", "Avg") == 42.7
    assert np.isnan(cell(csv, "Baseline (RGB only)", "paper (A2D)", "dog-none"))  # not in paper
    assert cell(csv, "Ours (RGB only)", "ours", "dog-none") == pytest.approx(
        ours["per_class_accuracy"]["joint"]["79"], abs=0.05)
    assert cell(csv, "Ours (RGB only)", "ours", "Avg") == pytest.approx(
        ours["joint"]["ave"], abs=0.05)
    assert len([c for c in csv.columns if c not in ("table", "method", "source", "dataset")]) == 45
    assert md.count("| method | source |") == 3  # split in blocks like the paper


def test_ji_tables(tmp_path):
    ours = eval_json(tmp_path / "ours.json", seed=2, release="/data/A2D/Release", synthetic=False)
    rc, md, csv = make(tmp_path, "ji_table1", ours=tmp_path / "ours.json")
    assert rc == 0 and "A2D release at /data/A2D/Release" in md
    assert cell(csv, "TSMT + SM [Kalogeiton 2017]", "paper (A2D)", "joint mIoU") == 29.7
    assert np.isnan(cell(csv, "Trilayer [Xu 2015]", "paper (A2D)", "actor mIoU"))
    assert not (csv.method == "Trilayer [Xu 2015]").loc[csv.source == "ours"].any()
    assert cell(csv, "Ours", "ours", "action ave") == pytest.approx(ours["action"]["ave"], abs=0.05)

    (tmp_path / "det.json").write_text(json.dumps({"actor": 41.25, "action": {"map": 30.0},
                                                   "joint": 20.04}))
    rc, md, csv = make(tmp_path, "ji_table2", ours=tmp_path / "det.json")
    assert rc == 0
    assert cell(csv, "Ours (Current)", "ours", "action mAP") == 30.0
    assert cell(csv, "Ours (Current)", "ours", "actor mAP") == pytest.approx(41.2, abs=0.051)
    assert cell(csv, "TSHR [Kalogeiton 2017]", "paper (A2D)", "actor mAP") == 67.9

    rc, md, csv = make(tmp_path, "ji_table3")
    assert rc == 0 and "none given" in md
    assert cell(csv, "Ours w/o Flow Stream", "paper (A2D)", "action glo") == 86.3
    assert csv[csv.source == "ours"].drop(columns=["table", "method", "source", "dataset"]
                                          ).isna().all().all()


def test_bad_inputs_are_rejected(tmp_path, caplog):
    eval_json(tmp_path / "a.json", release="/one")
    eval_json(tmp_path / "b.json", release="/two")
    rc, *_ = make(tmp_path, "dang_table1", ourz=tmp_path / "a.json")
    assert rc == 1 and "ours_rgbflow" in caplog.text  # lists the valid keys
    rc, *_ = make(tmp_path, "dang_table1", ours_rgb=tmp_path / "a.json",
                  ours_rgbflow=tmp_path / "b.json")
    assert rc == 1 and "different datasets" in caplog.text


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_builds_without_inputs(tmp_path, name):
    rc, md, csv = make(tmp_path, name)
    assert rc == 0
    assert set(csv.source) == {"ours", "paper (A2D)"}
    assert len(csv[csv.source == "paper (A2D)"]) == len(TABLES[name].rows)


def test_paper_numbers_agree_across_tables():
    """Transcription checks: the same model appears in several tables of a paper."""
    t1, t3 = paper.DANG_TABLE1, paper.DANG_TABLE3
    assert t3["A2D + GT / A2D"] == t1["Ours (RGB + flow)"]  # the paper's default setting
    for name, row in paper.DANG_TABLE5.items():
        assert row["avg"] == t1[name]["joint"]["ave"]
        known = [v for v in row["per_class"].values() if v is not None]
        assert len(row["per_class"]) == 44 and len(known) == 43
        # Avg is over 44 classes: the dog-none value it implies must be a percentage
        implied = 44 * row["avg"] - sum(known)
        assert -44 * 0.05 <= implied <= 100 + 44 * 0.05, (name, implied)
    assert paper.JI_TABLE3["Ours (Full)"] == paper.JI_TABLE1["Ours"]
    # shared/docs/a2d-format.md section 7 (ave / glo / mIoU)
    assert paper.JI_TABLE1["Ours"]["joint"] == {"ave": 51.4, "glo": 92.5, "miou": 36.9}
    assert t1["Ours (RGB + flow)"]["actor"] == {"ave": 86.0, "glo": 95.3, "miou": 68.1}
