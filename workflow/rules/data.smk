# Dataset: the synthetic release (when enabled) and the frame index read by all later rules.


if config["synthetic"]["enabled"]:

    rule synth:
        output:
            directory(RELEASE),
        params:
            cfg=cfg_json("synthetic"),
            code=code("pipeline.synth"),
        log:
            f"{LOGS}/synth.log",
        benchmark:
            f"{BENCH}/synth.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        conda:
            "../../envs/actorseg.yaml"
        shell:
            "python -m pipeline.synth --out {output:q} --config-json {params.cfg:q} > {log:q} 2>&1"


checkpoint index:
    input:
        release_input(),
    output:
        csv=f"{RES}/index/frames.csv",
    params:
        cfg=cfg_json("dataset"),
        code=code("pipeline.index"),
    log:
        f"{LOGS}/index.log",
    benchmark:
        f"{BENCH}/index.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.index --release {input:q} --out {output.csv:q}"
        " --config-json {params.cfg:q} > {log:q} 2>&1"
