# Evaluation: score a folder of predictions with the A2D protocol (python -m pipeline.evaluate).
# Generic over the model: results/predictions/{model}/{video}.h5 (stage predict, one file per
# test video) -> results/eval/{model}.json (all pixels), .non_boundary.json (Dang Table 2) and
# .per_class.csv (Dang Table 5) and .confusion.npz (raw counts for the report's heat maps).
# The metrics JSON and per-class CSV are flagged for Snakemake's report (`snakemake --report`).


rule evaluate:
    input:
        release=release_input(),
        index=f"{RES}/index/frames.csv",
        preds=lambda wc: [f"{RES}/predictions/{wc.model}/{v}.h5" for v in videos("test")],
    output:
        json=report(f"{RES}/eval/{{model}}.json", caption="../report/evaluation.rst",
                    category="Evaluation", subcategory="metrics", labels={"model": "{model}"}),
        non_boundary=f"{RES}/eval/{{model}}.non_boundary.json",
        per_class=report(f"{RES}/eval/{{model}}.per_class.csv",
                         caption="../report/per_class_table.rst", category="Evaluation",
                         subcategory="per-class accuracy", labels={"model": "{model}"}),
        confusion=f"{RES}/eval/{{model}}.confusion.npz",
    wildcard_constraints:
        model=r"[A-Za-z0-9_-]+",
    params:
        preds=lambda wc: f"{RES}/predictions/{wc.model}",
        cfg=cfg_json("evaluation"),
        code=code("pipeline.evaluate"),
    log:
        f"{LOGS}/evaluate/{{model}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.evaluate --release {input.release:q} --index {input.index:q}"
        " --pred-h5 {params.preds:q} --out {output.json:q}"
        " --non-boundary-out {output.non_boundary:q} --per-class-out {output.per_class:q}"
        " --confusion-out {output.confusion:q}"
        " --config-json {params.cfg:q} > {log:q} 2>&1"


# all_background.json is this rule's, not a model's called "all_background"
ruleorder: evaluate_background > evaluate


rule evaluate_background:
    """The all-background prediction scored like a model: the reference value of the split
    (a model at this value learned nothing). Also read by the claims table."""
    input:
        release=release_input(),
        index=f"{RES}/index/frames.csv",
    output:
        json=report(f"{RES}/eval/all_background.json",
                    caption="../report/all_background.rst", category="Evaluation",
                    subcategory="metrics", labels={"model": "all_background"}),
        non_boundary=f"{RES}/eval/all_background.non_boundary.json",
    params:
        cfg=cfg_json("evaluation"),
        code=code("pipeline.evaluate"),
    log:
        f"{LOGS}/evaluate/all_background.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.evaluate --release {input.release:q} --index {input.index:q}"
        " --all-background --out {output.json:q} --non-boundary-out {output.non_boundary:q}"
        " --config-json {params.cfg:q} > {log:q} 2>&1"
