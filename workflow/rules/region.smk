# Dang et al. 2018 region-mask method: stage 1 (front-end + DeepLab baseline), feature cache,
# stage 2 (region back-end), predictions. Variants are wildcards sharing the cached stages:
#   {streams}      rgb | rgbflow            RGB-only or two-stream front-end (Table 1)
#   {train_masks}  e.g. gt+model            region masks stage 2 is trained with (Table 3)
#   {source}       model | checkpoint | gt  region masks at test time (Table 3)
# Predictions: results/predictions/baseline_{streams}/ and region_{streams}_{source}/, scored
# by rule evaluate (evaluate.smk) into results/eval/<name>.json.

REGION = config["region_model"]
RM = f"{RES}/region_model"
# A GPU is requested only when the stages may run on CUDA ("auto" resolves on the node).
REGION_GPU = 0 if REGION["device"] == "cpu" else 1
# Training jobs: cluster.train_gpus GPUs (one torchrun process each), capped by the batch size.
STAGE1_GPUS = train_gpus(REGION["device"], REGION["stage1"]["batch_size"])
STAGE2_GPUS = train_gpus(REGION["device"], REGION["stage2"]["batch_size"])
_SRC = "(?:model|checkpoint|gt)"
# Keys only the region back-end reads: changing them re-runs stage 2 and the region model's
# predictions, not stage 1, the feature cache or the baseline (on A2D, 20000 stage-1 steps).
REGION_BACKEND_KEYS = ("stage2", "region_head")


wildcard_constraints:
    streams="rgb|rgbflow",
    source="model|checkpoint|gt",
    train_masks=rf"{_SRC}(?:\+{_SRC})*",


def region_stage2_sources(source):
    """Training masks of the region model tested on `source` masks (Dang et al. Table 3):
    stage2.train_sources for model/gt; for checkpoint, its generated masks replace the
    configured generated ones ("COCO + GT" vs "A2D + GT"); GT stays if configured."""
    train = sorted(REGION["stage2"]["train_sources"])
    if source == "gt":
        return "+".join(train)
    return "+".join(sorted(set((["gt"] if "gt" in train else []) + [source])))


def _split_inputs(wc, split, pattern):
    return [pattern.format(video=v) for v in videos(split)]


def region_stage1_inputs(wc):
    out = {"frames": _split_inputs(wc, "train", f"{RES}/frames/{{video}}.h5")}
    if wc.streams == "rgbflow":
        out["flow"] = _split_inputs(wc, "train", f"{RES}/flow/{{video}}.h5")
    return out


def flow_dir_arg(wc):
    return f"--flow-dir {RES}/flow" if wc.streams == "rgbflow" else ""


def video_flow_input(videos):
    flow = job_files(videos, f"{RES}/flow/{{video}}.h5")
    return lambda wc: [f.format(video=wc.get("video")) for f in flow] \
        if wc.streams == "rgbflow" else []


rule region_stage1:
    input:
        unpack(region_stage1_inputs),
        index=f"{RES}/index/frames.csv",
        release=release_input(),
    output:
        ckpt=f"{RM}/{{streams}}/stage1.pt",
        csv=f"{RM}/{{streams}}/stage1_loss.csv",
        png=f"{RM}/{{streams}}/stage1_loss.png",
    params:
        flow=flow_dir_arg,
        cfg=cfg_json("region_model", without=REGION_BACKEND_KEYS),
        code=code("pipeline.region.train_baseline"),
    log:
        f"{LOGS}/region_stage1/{{streams}}.log",
    benchmark:
        f"{BENCH}/region_stage1/{{streams}}.tsv"
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=STAGE1_GPUS,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        train_launcher(STAGE1_GPUS) + " -m pipeline.region.train_baseline"
        " --release {input.release:q} --index {input.index:q}"
        " --frames-dir {RES}/frames {params.flow}"
        " --streams {wildcards.streams} --out {output.ckpt:q}"
        " --threads {threads} --config-json {params.cfg:q} > {log:q} 2>&1"


for _suffix, _job, _vids in video_jobs():

    rule:
        name:
            f"region_features{_suffix}"
        input:
            stage1=f"{RM}/{{streams}}/stage1.pt",
            index=f"{RES}/index/frames.csv",
            frames=job_files(_vids, f"{RES}/frames/{{video}}.h5"),
            flow=video_flow_input(_vids),
        output:
            job_files(_vids, f"{RM}/{{streams}}/features/{{video}}.h5"),
        wildcard_constraints:
            video=unsharded_video_re(),
        params:
            videos=job_args(_vids, ("--video", "{video}"),
                            ("--out", f"{RM}/{{streams}}/features/{{video}}.h5")),
            flow=flow_dir_arg,
            cfg=cfg_json("region_model", without=REGION_BACKEND_KEYS),
            code=code("pipeline.region.features"),
        log:
            f"{LOGS}/region_features/{{streams}}/{_job}.log",
        benchmark:
            f"{BENCH}/region_features/{{streams}}/{_job}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=20 * job_size(_vids),
            gpu=REGION_GPU,
        conda:
            "../../envs/actorseg.yaml"
        shell:
            "python -m pipeline.region.features --index {input.index:q} {params.videos}"
            " --frames-dir {RES}/frames {params.flow} --streams {wildcards.streams}"
            " --stage1 {input.stage1:q} --config-json {params.cfg:q} > {log:q} 2>&1"

    shard_profile_resources("region_features", _suffix, _vids)


def region_stage2_inputs(wc):
    sources = wc.train_masks.split("+")
    return {
        "features": _split_inputs(wc, "train", f"{RM}/{wc.streams}/features/{{video}}.h5"),
        "masks": [m for s in sources
                  for m in _split_inputs(wc, "train", f"{RES}/masks/{s}/{{video}}.h5")],
    }


rule region_stage2:
    input:
        unpack(region_stage2_inputs),
        index=f"{RES}/index/frames.csv",
        release=release_input(),
    output:
        ckpt=f"{RM}/{{streams}}/stage2_{{train_masks}}.pt",
        csv=f"{RM}/{{streams}}/stage2_{{train_masks}}_loss.csv",
        png=f"{RM}/{{streams}}/stage2_{{train_masks}}_loss.png",
    params:
        cfg=cfg_json("region_model"),
        code=code("pipeline.region.train_region"),
    log:
        f"{LOGS}/region_stage2/{{streams}}_{{train_masks}}.log",
    benchmark:
        f"{BENCH}/region_stage2/{{streams}}_{{train_masks}}.tsv"
    # Small FC layers and gathers on cached features: measured at 1.0 CPU core (cpu_time /
    # wall of its benchmark file, embedded default), so a second thread would sit idle while
    # it could run a per-video job.
    threads: 1
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=STAGE2_GPUS,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        train_launcher(STAGE2_GPUS) + " -m pipeline.region.train_region"
        " --release {input.release:q} --index {input.index:q}"
        " --features-dir {RM}/{wildcards.streams}/features"
        " --masks-root {RES}/masks --train-sources {wildcards.train_masks:q}"
        " --out {output.ckpt:q} --threads {threads} --config-json {params.cfg:q} > {log:q} 2>&1"


# Predictions are asked for test videos: shards of the test split (other videos: per video).
for _suffix, _job, _vids in video_jobs("test"):

    rule:
        name:
            f"predict_baseline{_suffix}"
        input:
            stage1=f"{RM}/{{streams}}/stage1.pt",
            index=f"{RES}/index/frames.csv",
            frames=job_files(_vids, f"{RES}/frames/{{video}}.h5"),
            flow=video_flow_input(_vids),
        output:
            h5=job_files(_vids, f"{RES}/predictions/baseline_{{streams}}/{{video}}.h5"),
            png=[directory(d) for d in
                 job_files(_vids, f"{RES}/predictions/baseline_{{streams}}/png/{{video}}")],
        wildcard_constraints:
            video=unsharded_video_re("test"),
        params:
            videos=job_args(_vids, ("--video", "{video}"),
                            ("--out", f"{RES}/predictions/baseline_{{streams}}/{{video}}.h5"),
                            ("--png-dir", f"{RES}/predictions/baseline_{{streams}}/png/{{video}}")),
            flow=flow_dir_arg,
            cfg=cfg_json("region_model", without=REGION_BACKEND_KEYS),
            code=code("pipeline.region.predict"),
        log:
            f"{LOGS}/predict_baseline/{{streams}}/{_job}.log",
        benchmark:
            f"{BENCH}/predict_baseline/{{streams}}/{_job}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=20 * job_size(_vids),
            gpu=REGION_GPU,
        conda:
            "../../envs/actorseg.yaml"
        shell:
            "python -m pipeline.region.predict --model baseline --index {input.index:q}"
            " {params.videos} --stage1 {input.stage1:q} --frames-dir {RES}/frames"
            " {params.flow} --config-json {params.cfg:q} > {log:q} 2>&1"

    shard_profile_resources("predict_baseline", _suffix, _vids)

    rule:
        name:
            f"predict_region{_suffix}"
        input:
            stage2=lambda wc: f"{RM}/{wc.streams}/stage2_{region_stage2_sources(wc.source)}.pt",
            index=f"{RES}/index/frames.csv",
            features=job_files(_vids, f"{RM}/{{streams}}/features/{{video}}.h5"),
            masks=job_files(_vids, f"{RES}/masks/{{source}}/{{video}}.h5"),
        output:
            h5=job_files(_vids, f"{RES}/predictions/region_{{streams}}_{{source}}/{{video}}.h5"),
            png=[directory(d) for d in job_files(
                _vids, f"{RES}/predictions/region_{{streams}}_{{source}}/png/{{video}}")],
        wildcard_constraints:
            video=unsharded_video_re("test"),
        params:
            videos=job_args(
                _vids, ("--video", "{video}"),
                ("--out", f"{RES}/predictions/region_{{streams}}_{{source}}/{{video}}.h5"),
                ("--png-dir", f"{RES}/predictions/region_{{streams}}_{{source}}/png/{{video}}")),
            cfg=cfg_json("region_model"),
            code=code("pipeline.region.predict"),
        log:
            f"{LOGS}/predict_region/{{streams}}_{{source}}/{_job}.log",
        benchmark:
            f"{BENCH}/predict_region/{{streams}}_{{source}}/{_job}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=20 * job_size(_vids),
            gpu=REGION_GPU,
        conda:
            "../../envs/actorseg.yaml"
        shell:
            "python -m pipeline.region.predict --model region --index {input.index:q}"
            " {params.videos} --stage2 {input.stage2:q}"
            " --features-dir {RM}/{wildcards.streams}/features"
            " --masks-dir {RES}/masks/{wildcards.source} --config-json {params.cfg:q}"
            " > {log:q} 2>&1"

    shard_profile_resources("predict_region", _suffix, _vids)


# -- aggregates ---------------------------------------------------------------------------------
TABLE1_MODELS = ["baseline_rgb", "region_rgb_model", "baseline_rgbflow", "region_rgbflow_model"]
TABLE3_MODELS = ["region_rgbflow_checkpoint", "region_rgbflow_model", "region_rgbflow_gt"]
#: Stream sets the default target trains: the RGB-only models of Table 1 on request
#: (targets.dang_rgb); `snakemake dang_table1` always builds all four.
DEFAULT_STREAMS = ("rgb", "rgbflow") if config["targets"]["dang_rgb"] else ("rgbflow",)
DEFAULT_TABLE1_MODELS = [m for m in TABLE1_MODELS if m.split("_")[1] in DEFAULT_STREAMS]


def region_predictions(models):
    return lambda wc: [f"{RES}/predictions/{m}/{v}.h5" for m in models for v in videos("test")]


rule region_predictions_table1:
    """Test-split predictions of the four Table 1 models (no evaluation)."""
    localrule: True
    input:
        region_predictions(TABLE1_MODELS),


rule dang_table1:
    """Dang et al. Table 1: baseline vs region model, RGB-only vs RGB + flow (test split)."""
    localrule: True
    input:
        expand(f"{RES}/eval/{{model}}.json", model=TABLE1_MODELS),


rule dang_table3:
    """Dang et al. Table 3: test-time masks from the `checkpoint` segmenter, the `model`
    segmenter trained on the dataset, and GT masks (two-stream region model)."""
    localrule: True
    input:
        expand(f"{RES}/eval/{{model}}.json", model=TABLE3_MODELS),
