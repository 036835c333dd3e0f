# Stage frames: decode each clip once; cache annotated frames, their context and flow partners.
# One job per video, or per shard of cluster.videos_per_job videos (common.smk: video_jobs).


for _suffix, _job, _vids in video_jobs():

    rule:
        name:
            f"frames{_suffix}"
        input:
            index=rules.index.output.csv,
            release=release_input(),
        output:
            job_files(_vids, f"{RES}/frames/{{video}}.h5"),
        wildcard_constraints:
            video=unsharded_video_re(),
        params:
            videos=job_args(_vids, ("--video", "{video}"), ("--out", f"{RES}/frames/{{video}}.h5")),
            cfg=cfg_json("frames"),
            code=code("pipeline.frames"),
        log:
            f"{LOGS}/frames/{_job}.log",
        benchmark:
            f"{BENCH}/frames/{_job}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10 * job_size(_vids),
        conda:
            "../../envs/actorseg.yaml"
        shell:
            "python -m pipeline.frames --release {input.release:q} --index {input.index:q}"
            " {params.videos} --config-json {params.cfg:q} > {log:q} 2>&1"

    shard_profile_resources("frames", _suffix, _vids)


rule all_frames:
    localrule: True
    input:
        # every indexed video, known once the index checkpoint has run
        lambda wc: expand(f"{RES}/frames/{{video}}.h5", video=videos()),
