# Stage flow: optical flow of each video's annotated frames and their context (DIS or ptlflow).
# One job per video, or per shard of cluster.videos_per_job videos (common.smk: video_jobs).

FLOW = config["flow"]
# A GPU is requested only when the ptlflow backend may run on CUDA ("auto" resolves on the
# compute node, which is where the GPU is); the DIS backend is CPU-only.
FLOW_GPU = 1 if FLOW["backend"] == "ptlflow" and FLOW["device"] != "cpu" else 0


for _suffix, _job, _vids in video_jobs():

    rule:
        name:
            f"flow{_suffix}"
        input:
            frames=job_files(_vids, f"{RES}/frames/{{video}}.h5"),
        output:
            job_files(_vids, f"{RES}/flow/{{video}}.h5"),
        wildcard_constraints:
            video=unsharded_video_re(),
        params:
            videos=job_args(_vids, ("--frames", f"{RES}/frames/{{video}}.h5"),
                            ("--out", f"{RES}/flow/{{video}}.h5")),
            cfg=cfg_json("flow"),
            code=code("pipeline.flow"),
        log:
            f"{LOGS}/flow/{_job}.log",
        benchmark:
            f"{BENCH}/flow/{_job}.tsv"
        threads: 1
        resources:
            mem_mb=6000 if FLOW["backend"] == "ptlflow" else 1500,
            runtime=(30 if FLOW["backend"] == "ptlflow" else 10) * job_size(_vids),
            gpu=FLOW_GPU,
        conda:
            "../../envs/actorseg.yaml"
        shell:
            "python -m pipeline.flow {params.videos} --threads {threads}"
            " --config-json {params.cfg:q} > {log:q} 2>&1"

    shard_profile_resources("flow", _suffix, _vids)


rule all_flow:
    localrule: True
    input:
        # every indexed video, known once the index checkpoint has run
        lambda wc: expand(f"{RES}/flow/{{video}}.h5", video=videos()),
