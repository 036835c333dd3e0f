"""Published numbers of the two reproduced papers, A2D test split, in percent.

Copied by hand from the tables of ``shared/papers/dang2018-region-masks.md`` (Dang, Zhou, Tu,
Hoy, Yuan: "Actor-action semantic segmentation with region masks", BMVC 2018) and
``shared/papers/ji2018-end-to-end.md`` (Ji et al.: "End-to-end joint semantic segmentation of
actors and actions in video", ECCV 2018). They are shown beside our numbers as a reference only,
labelled "paper (A2D)": they were measured on the real A2D release, never on our synthetic data.

Each row is written in its paper's own column order (so it can be checked against the paper by
eye) and converted to ``{setting: {metric: value}}`` with settings ``actor``, ``action``,
``joint`` and metrics ``ave``, ``glo``, ``miou``; ``None`` = not reported ("-" in the paper).
"""

from __future__ import annotations

Metrics = dict[str, dict[str, float | None]]
_SETTINGS = ("actor", "action", "joint")


def _dang(glo: tuple, ave: tuple, miou: tuple) -> Metrics:
    """Dang et al. column order: glo, ave, mIoU, each as (actor, action, actor-action)."""
    return {s: {"ave": ave[i], "glo": glo[i], "miou": miou[i]} for i, s in enumerate(_SETTINGS)}


def _ji(actor: tuple, action: tuple, joint: tuple) -> Metrics:
    """Ji et al. column order: actor, action, joint (A,A), each as (ave, glo, mIoU)."""
    return {s: dict(zip(("ave", "glo", "miou"), v))
            for s, v in zip(_SETTINGS, (actor, action, joint))}


# Dang et al. Table 1: DeepLab-type baseline vs region masks, RGB vs RGB + flow.
DANG_TABLE1: dict[str, Metrics] = {
    "Baseline (RGB only)": _dang((95.7, 93.5, 93.0), (77.0, 58.5, 42.7), (67.1, 46.0, 32.1)),
    "Ours (RGB only)": _dang((95.0, 92.9, 92.5), (85.5, 68.8, 51.5), (67.0, 48.1, 34.5)),
    "Baseline (RGB + flow)": _dang((95.8, 93.9, 93.5), (78.0, 61.7, 46.1), (68.1, 49.1, 34.9)),
    "Ours (RGB + flow)": _dang((95.3, 93.4, 93.0), (86.0, 70.7, 56.4), (68.1, 51.1, 38.6)),
}

# Dang et al. Table 2: the same two RGB + flow models on non-boundary pixels only.
DANG_TABLE2: dict[str, Metrics] = {
    "Baseline (Non-Boundary)": _dang((97.7, 96.3, 95.8), (85.1, 67.8, 51.6), (75.6, 53.9, 39.0)),
    "Ours (Non-Boundary)": _dang((97.3, 96.0, 95.7), (88.9, 73.6, 57.8), (73.3, 56.1, 41.8)),
}

# Dang et al. Table 3: region-mask source at training / testing time (FCIS on COCO or A2D; GT).
DANG_TABLE3: dict[str, Metrics] = {
    "COCO + GT / COCO": _dang((94.7, 93.0, 92.6), (82.4, 69.4, 54.1), (65.1, 50.9, 37.9)),
    "A2D + GT / A2D": _dang((95.3, 93.4, 93.0), (86.0, 70.7, 56.4), (68.1, 51.1, 38.6)),
    "A2D + GT / GT": _dang((98.1, 96.3, 95.9), (87.7, 72.5, 57.7), (80.9, 59.1, 45.6)),
}

# Dang et al. Table 5: per-category accuracy (joint setting), columns in the paper's order.
# The paper's table has 42 of the 43 valid pairs: dog-none (79) has no column (its dog block
# lists crawling .. walking only), so it is None here. "Avg" equals Table 1's joint ave.
DANG_TABLE5_COLUMNS: tuple[int, ...] = (
    0,
    11, 12, 13, 15, 16, 17, 18, 19,  # adult: climbing crawling eating jumping rolling running
    #                                  walking none
    21, 22, 26, 28, 29,  # baby: climbing crawling rolling walking none
    34, 35, 36, 39,  # ball: flying jumping rolling none
    41, 43, 44, 45, 46, 48, 49,  # bird: climbing eating flying jumping rolling walking none
    54, 55, 56, 57, 59,  # car: flying jumping rolling running none
    61, 63, 65, 66, 67, 68, 69,  # cat: climbing eating jumping rolling running walking none
    72, 73, 75, 76, 77, 78,  # dog: crawling eating jumping rolling running walking
)
_DANG_TABLE5_ROWS: dict[str, tuple[tuple[float, ...], float]] = {
    # (values in DANG_TABLE5_COLUMNS order, one line per actor, Avg)
    "Baseline (RGB only)": ((
        98.1,  # BG
        49.0, 71.9, 91.7, 22.9, 34.1, 31.0, 61.7, 51.1,  # adult
        68.8, 59.3, 74.1, 55.6, 16.4,  # baby
        0.8, 2.6, 49.5, 6.5,  # ball
        57.9, 45.9, 60.7, 5.6, 43.5, 46.0, 25.4,  # bird
        28.6, 80.2, 42.9, 44.8, 50.6,  # car
        48.8, 65.5, 19.2, 51.1, 14.5, 41.5, 4.4,  # cat
        42.2, 80.2, 5.5, 38.9, 6.8, 71.8,  # dog
    ), 42.7),
    "Baseline (RGB + flow)": ((
        98.2,  # BG
        53.4, 77.7, 89.9, 31.5, 36.5, 32.2, 64.6, 51.5,  # adult
        69.3, 69.2, 73.5, 58.7, 20.3,  # baby
        2.0, 7.6, 53.9, 12.8,  # ball
        62.4, 45.5, 61.1, 9.9, 46.6, 55.0, 28.5,  # bird
        29.2, 84.6, 45.5, 56.6, 46.3,  # car
        53.1, 64.7, 15.8, 49.2, 20.3, 52.3, 8.1,  # cat
        51.9, 82.9, 13.2, 47.8, 8.4, 74.8,  # dog
    ), 46.1),
    "Ours (RGB only)": ((
        96.2,  # BG
        76.7, 76.3, 95.5, 27.6, 59.1, 49.5, 56.4, 62.2,  # adult
        83.0, 75.3, 88.6, 57.5, 8.9,  # baby
        5.4, 28.6, 65.8, 12.6,  # ball
        68.3, 48.6, 81.6, 29.7, 57.9, 54.5, 3.0,  # bird
        53.0, 94.3, 58.9, 56.2, 37.5,  # car
        58.2, 74.6, 32.8, 82.1, 34.6, 37.0, 4.0,  # cat
        46.1, 77.9, 8.8, 48.4, 19.5, 70.3,  # dog
    ), 51.5),
    "Ours (RGB + flow)": ((
        96.4,  # BG
        73.2, 79.7, 93.1, 43.0, 48.1, 53.0, 61.1, 66.1,  # adult
        83.3, 77.3, 86.3, 61.0, 37.0,  # baby
        26.7, 30.8, 81.1, 18.5,  # ball
        63.2, 50.5, 80.2, 22.2, 65.0, 61.9, 3.0,  # bird
        34.9, 97.9, 62.3, 75.7, 62.9,  # car
        62.8, 75.7, 30.9, 75.7, 46.1, 49.4, 6.7,  # cat
        49.2, 81.3, 35.7, 61.9, 27.0, 71.0,  # dog
    ), 56.4),
}
#: ``{row: {"per_class": {joint id: accuracy or None}, "avg": float}}`` over all 44 joint ids.
DANG_TABLE5: dict[str, dict] = {
    name: {"per_class": {79: None, **dict(zip(DANG_TABLE5_COLUMNS, values))}, "avg": avg}
    for name, (values, avg) in _DANG_TABLE5_ROWS.items()
}

# Ji et al. Table 1: joint actor-action segmentation vs prior work.
JI_TABLE1: dict[str, Metrics] = {
    "Trilayer [Xu 2015]": _ji((45.7, 74.6, None), (47.0, 74.6, None), (25.4, 76.2, None)),
    "GPM+TSP [Xu 2016]": _ji((58.3, 85.2, 33.4), (60.5, 85.3, 32.0), (43.3, 84.2, 19.9)),
    "GPM+GBH [Xu 2016]": _ji((59.4, 84.8, 33.3), (61.2, 84.9, 31.9), (43.9, 83.8, 19.9)),
    "TSMT + GBH [Kalogeiton 2017]": _ji((72.9, 85.8, 42.7), (61.4, 84.6, 35.5), (48.0, 83.9, 24.9)),
    "TSMT + SM [Kalogeiton 2017]": _ji((73.7, 90.6, 49.5), (60.5, 89.3, 42.2), (47.5, 88.7, 29.7)),
    "Ours": _ji((79.1, 94.5, 66.4), (62.9, 92.6, 46.3), (51.4, 92.5, 36.9)),
}

# Ji et al. Table 2: joint spatial detection of actors and actions, mAP at IoU 0.5.
JI_TABLE2: dict[str, dict[str, float]] = {
    "TSCT [Kalogeiton 2017]": {"actor": 67.2, "action": 60.2, "joint": 49.2},
    "TSHR [Kalogeiton 2017]": {"actor": 67.9, "action": 59.6, "joint": 49.6},
    "TSMT [Kalogeiton 2017]": {"actor": 68.3, "action": 60.0, "joint": 48.9},
    "Ours (Current)": {"actor": 77.2, "action": 62.4, "joint": 55.5},
}

# Ji et al. Table 3: ablations of the end-to-end model. "w/o Mask + SM" replaced the mask head by
# SharpMask; our variant fills the boxes instead, so pipeline.tables names our row
# "Ours w/o Mask, boxes filled" and shows this number as the paper's SharpMask row.
JI_TABLE3: dict[str, Metrics] = {
    "Ours (Full)": _ji((79.1, 94.5, 66.4), (62.9, 92.6, 46.3), (51.4, 92.5, 36.9)),
    "Mask R-CNN Baseline": _ji((62.8, 84.2, 33.7), (59.6, 84.0, 30.3), (41.7, 82.5, 19.1)),
    "Ours w/o Mask + SM": _ji((76.6, 92.2, 60.3), (60.7, 90.3, 42.9), (49.0, 89.8, 32.4)),
    "Ours w/o Temp Context": _ji((79.0, 94.1, 66.1), (61.8, 92.0, 45.5), (50.3, 90.2, 35.3)),
    "Ours w/o Flow Stream": _ji((79.5, 93.7, 66.5), (60.4, 86.3, 36.8), (46.2, 87.8, 29.4)),
    "Ours w/o Joint Training": _ji((77.7, 93.2, 63.2), (62.1, 91.3, 45.2), (50.9, 90.1, 33.6)),
}
