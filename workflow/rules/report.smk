# Report: the paper tables, time per frame, and results/report/index.html (python -m
# pipeline.tables, pipeline.report.timing, pipeline.report). Every input is an explicit list of
# files other rules produce, built by functions from what the config enables.
# Include after region.smk and masks.smk (uses TABLE1_MODELS, REGION, MASKS, SEG, videos()).
#
# Snakemake's own report (`snakemake --report report.zip`, after a run): the outputs flagged
# report(...) below and in evaluate.smk, with the captions of workflow/report/*.rst (paths
# relative to this file), grouped by category as in the Snakemake workflow catalog.

import json

report: "../report/workflow.rst"

REPORT = f"{RES}/report"
TABLES = f"{RES}/tables"
#: The two-stream models the report centres on (Dang et al.'s main comparison).
REPORT_BASELINE = "baseline_rgbflow"


def report_region_sources():
    """Test-time mask sources that can run: `checkpoint` only with a segmenter weights file."""
    return [s for s in ("model", "checkpoint", "gt") if s != "checkpoint" or SEG["checkpoint"]]


def report_main_model():
    """The region model tested on the configured masks source (masks.source)."""
    return f"region_rgbflow_{MASKS['source']}"


def report_table_inputs():
    """{table: {row key: evaluation JSON}} of the Dang et al. tables the config builds (rows
    left out are shown as "–")."""
    t1 = {"baseline_rgb": "baseline_rgb", "ours_rgb": "region_rgb_model",
          "baseline_rgbflow": "baseline_rgbflow", "ours_rgbflow": "region_rgbflow_model"}
    t1 = {k: m for k, m in t1.items() if m in DEFAULT_TABLE1_MODELS}
    t3 = {"coco": "region_rgbflow_checkpoint", "a2d": "region_rgbflow_model",
          "gt": "region_rgbflow_gt"}
    t3 = {k: m for k, m in t3.items() if m.rsplit("_", 1)[1] in report_region_sources()}
    return {
        "dang_table1": {k: f"{RES}/eval/{m}.json" for k, m in t1.items()},
        "dang_table2": {"baseline_nb": f"{RES}/eval/baseline_rgbflow.non_boundary.json",
                        "ours_nb": f"{RES}/eval/region_rgbflow_model.non_boundary.json"},
        "dang_table3": {k: f"{RES}/eval/{m}.json" for k, m in t3.items()},
        "dang_table5": {k: f"{RES}/eval/{m}.json" for k, m in t1.items()},
    }


rule paper_table:
    input:
        lambda wc: list(report_table_inputs()[wc.table].values()),
    output:
        md=f"{TABLES}/{{table}}.md",
        csv=report(f"{TABLES}/{{table}}.csv", caption="../report/paper_table.rst",
                   category="Paper tables", labels={"table": "{table}"}),
    wildcard_constraints:
        table="dang_table[1235]",
    params:
        inputs=lambda wc: " ".join(f"{k}={v}" for k, v in report_table_inputs()[wc.table].items()),
        out=lambda wc: f"{TABLES}/{wc.table}",
        code=code("pipeline.tables"),
    log:
        f"{LOGS}/paper_table/{{table}}.log",
    localrule: True
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.tables --name {wildcards.table} --inputs {params.inputs}"
        " --out {params.out:q} > {log:q} 2>&1"


def report_timing_stages():
    """Benchmark folders timed: per-video rules of the region method and the baseline."""
    src = MASKS["source"]
    return ["flow", f"masks/{src}", "region_features/rgbflow", f"predict_region/rgbflow_{src}",
            "predict_baseline/rgbflow"]


def report_benchmarks(wildcards=None):
    """Every benchmark TSV the timing table reads (the same files pipeline.report.timing opens:
    all indexed videos, test videos for predict_*): one per shard job (video_jobs), one per
    video the shards leave out."""
    files = []
    for stage in report_timing_stages():
        split = "test" if stage.startswith("predict_") else None
        jobs = [(job, vids) for _, job, vids in video_jobs(split) if vids]
        sharded = {v for _, vids in jobs for v in vids}
        files += [f"{BENCH}/{stage}/{job}.tsv" for job, _ in jobs]
        files += [f"{BENCH}/{stage}/{v}.tsv" for v in videos(split) if v not in sharded]
    return files


rule timing:
    input:
        index=f"{RES}/index/frames.csv",
        benchmarks=report_benchmarks,
    output:
        md=f"{TABLES}/timing.md",
        csv=report(f"{TABLES}/timing.csv", caption="../report/timing.rst",
                   category="Paper tables", labels={"table": "timing"}),
    params:
        stages=" ".join(f"--stage {s}" for s in report_timing_stages()),
        code=code("pipeline.report.timing"),
    log:
        f"{LOGS}/timing.log",
    localrule: True
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.report.timing --index {input.index:q} --benchmarks {BENCH}"
        " {params.stages} --videos-per-job {VIDEOS_PER_JOB} --out {TABLES}/timing > {log:q} 2>&1"


def report_evals():
    """{name: evaluation JSON} shown in the headline table and per-class charts."""
    models = list(DEFAULT_TABLE1_MODELS) + [f"region_rgbflow_{s}" for s in report_region_sources()]
    models.append(E2E_REPORT_MODEL)  # Ji et al.'s full model, beside the region model
    models.append("all_background")  # the split's reference: a model at this value learned nothing
    return {m: f"{RES}/eval/{m}.json" for m in dict.fromkeys(models)}


def report_losses():
    """{name: loss CSV}: both region-model stages per stream set, and the segmenter when the
    generated masks come from the one trained here."""
    out = {}
    for streams in DEFAULT_STREAMS:
        out[f"stage1_{streams}"] = f"{RM}/{streams}/stage1_loss.csv"
        stem = f"stage2_{region_stage2_sources(MASKS['source'])}"
        out[f"{stem}_{streams}"] = f"{RM}/{streams}/{stem}_loss.csv"
    if MASKS["source"] == "model" or "model" in REGION["stage2"]["train_sources"]:
        out["segmenter"] = rules.train_segmenter.output.losses
    out[E2E_REPORT_MODEL] = f"{RES}/e2e/full/loss.csv"
    return out


def report_qualitative():
    """{name: predictions folder} drawn beside the GT."""
    return {REPORT_BASELINE: f"{RES}/predictions/{REPORT_BASELINE}",
            report_main_model(): f"{RES}/predictions/{report_main_model()}",
            E2E_REPORT_MODEL: f"{RES}/predictions/{E2E_REPORT_MODEL}"}


def report_confusion():
    """{name: confusion counts (.npz) of the evaluate rule} for the models drawn as heat maps."""
    return {m: f"{RES}/eval/{m}.confusion.npz" for m in report_qualitative()}


#: Tables of Ji et al. made by workflow/rules/e2e.smk, shown after Dang et al.'s.
E2E_REPORT_MODEL = "e2e_full"
E2E_TABLES = ("ji_table1", "ji_table2")


def report_tables():
    ji = (*E2E_TABLES, "ji_table3") if config["targets"]["ji_table3"] else E2E_TABLES
    return [f"{TABLES}/{t}.md" for t in (*report_table_inputs(), *ji, "claims")]


def claims_inputs():
    """Every file pipeline.claims reads: the report's evaluations, the all-background
    reference, the non-boundary pair of Dang Table 2, the segmenter's metrics and, when
    targets.ji_table3 is on, Ji et al.'s ablations."""
    files = [*report_evals().values(), f"{RES}/eval/all_background.json",
             *report_table_inputs()["dang_table2"].values()]
    if MASKS["source"] == "model" or "model" in REGION["stage2"]["train_sources"]:
        files.append(rules.train_segmenter.output.metrics)
    if config["targets"]["ji_table3"]:
        files += [f"{RES}/eval/e2e_{v}.json" for v in JI_TABLE3_ROWS.values()]
    return list(dict.fromkeys(files))


rule claims:
    """The papers' claims as held / not held on this run (pipeline.claims)."""
    input:
        claims_inputs(),
    output:
        md=f"{TABLES}/claims.md",
        csv=report(f"{TABLES}/claims.csv", caption="../report/claims.rst",
                   category="Paper tables", labels={"table": "claims"}),
    params:
        segmenter=lambda wc, input: next((f"--segmenter {f}" for f in input
                                          if f.endswith("segmenter/metrics.json")), ""),
        code=code("pipeline.claims"),
    log:
        f"{LOGS}/claims.log",
    localrule: True
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.claims --eval-dir {RES}/eval {params.segmenter}"
        " --out {TABLES}/claims > {log:q} 2>&1"


def report_inputs(wildcards):
    test = videos("test")
    return {
        "release": release_input(),
        "index": f"{RES}/index/frames.csv",
        "evals": list(report_evals().values()),
        "losses": list(report_losses().values()),
        "tables": report_tables(),
        "timing": f"{TABLES}/timing.csv",
        "predictions": [f"{d}/{v}.h5" for d in report_qualitative().values() for v in test],
        "confusion": list(report_confusion().values()),
        "frames": [f"{RES}/frames/{v}.h5" for v in test],
        "masks": [f"{RES}/masks/{MASKS['source']}/{v}.h5" for v in test],
    }


def report_figures():
    """{output name: (figure under REPORT/figures, caption, labels)}: every figure
    pipeline.report draws from the inputs this rule gives it, flagged for Snakemake's report."""
    out = {}
    for s in ("joint", "actor", "action"):
        out[f"per_class_{s}"] = (f"per_class_{s}.png", "per_class",
                                 {"figure": "per-class accuracy", "model": "all", "setting": s})
        for m in report_confusion():
            out[f"confusion_{m}_{s}"] = (f"confusion_{m}_{s}.png", "confusion",
                                         {"figure": "confusion", "model": m, "setting": s})
    out["loss_curves"] = ("loss_curves.png", "loss_curves",
                          {"figure": "training losses", "model": "all", "setting": "-"})
    out["timing_figure"] = ("timing.png", "timing",
                            {"figure": "time per frame", "model": "all", "setting": "-"})
    out["qualitative"] = ("qualitative.png", "qualitative",
                          {"figure": "qualitative frames", "model": "all", "setting": "-"})
    return out


def report_figure_outputs():
    return {name: report(f"{REPORT}/figures/{png}", caption=f"../report/{caption}.rst",
                         category="Figures", labels=labels)
            for name, (png, caption, labels) in report_figures().items()}


def _pairs(mapping):
    return " ".join(f"{k}={v}" for k, v in mapping.items())


rule report:
    input:
        unpack(report_inputs),
    output:
        html=report(f"{REPORT}/index.html", caption="../report/report_page.rst",
                    category="Run report", labels={"page": "index.html"}),
        **report_figure_outputs(),
    params:
        evals=lambda wc: _pairs(report_evals()),
        losses=lambda wc: _pairs(report_losses()),
        tables=lambda wc: " ".join(report_tables()),
        # the counts the evaluate rule saved, so the predictions are not scored twice
        confusion=lambda wc: _pairs(report_confusion()),
        quali=lambda wc: _pairs(report_qualitative()),
        masks=f"{RES}/masks/{MASKS['source']}",
        config=json.dumps(config, sort_keys=True),
        code=code("pipeline.report.__main__"),
        # named inputs come from an input function that needs the index checkpoint; params
        # keep the command printable in a dry run before the index exists
        release=RELEASE,
        index=f"{RES}/index/frames.csv",
        timing=f"{TABLES}/timing.csv",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.report --results {RES} --release {params.release:q}"
        " --index {params.index:q} --out {REPORT} --eval {params.evals}"
        " --confusion {params.confusion} --loss {params.losses} --tables {params.tables}"
        " --timing {params.timing:q} --qualitative {params.quali} --masks-dir {params.masks:q}"
        " --frames-dir {RES}/frames --config-json {params.config:q} > {log:q} 2>&1"
