# Stage flow: optical flow of each video's annotated frames and their context (DIS or ptlflow).

FLOW = config["flow"]
# A GPU is requested only when the ptlflow backend may run on CUDA ("auto" resolves on the
# compute node, which is where the GPU is); the DIS backend is CPU-only.
FLOW_GPU = 1 if FLOW["backend"] == "ptlflow" and FLOW["device"] != "cpu" else 0


rule flow:
    input:
        frames=f"{RES}/frames/{{video}}.h5",
    output:
        f"{RES}/flow/{{video}}.h5",
    params:
        cfg=cfg_json("flow"),
        code=code("pipeline.flow"),
    log:
        f"{LOGS}/flow/{{video}}.log",
    benchmark:
        f"{BENCH}/flow/{{video}}.tsv"
    threads: 2
    resources:
        mem_mb=6000 if FLOW["backend"] == "ptlflow" else 1500,
        runtime=30 if FLOW["backend"] == "ptlflow" else 10,
        gpu=FLOW_GPU,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.flow --frames {input.frames:q} --out {output:q} --threads {threads}"
        " --config-json {params.cfg:q} > {log:q} 2>&1"


rule all_flow:
    localrule: True
    input:
        # every indexed video, known once the index checkpoint has run
        lambda wc: expand(f"{RES}/flow/{{video}}.h5", video=videos()),
