# Stage frames: decode each clip once; cache annotated frames, their context and flow partners.


rule frames:
    input:
        index=rules.index.output.csv,
        release=release_input(),
    output:
        f"{RES}/frames/{{video}}.h5",
    params:
        cfg=cfg_json("frames"),
        code=code("pipeline.frames"),
    log:
        f"{LOGS}/frames/{{video}}.log",
    benchmark:
        f"{BENCH}/frames/{{video}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.frames --release {input.release:q} --index {input.index:q}"
        " --video={wildcards.video:q} --out {output:q} --config-json {params.cfg:q} > {log:q} 2>&1"


rule all_frames:
    localrule: True
    input:
        # every indexed video, known once the index checkpoint has run
        lambda wc: expand(f"{RES}/frames/{{video}}.h5", video=videos()),
