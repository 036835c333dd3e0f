# Stage masks: instance region masks of every annotated frame (Dang et al. 2018, 3.1), from the
# segmenter trained here (model), a user's weights file (checkpoint) or the GT (gt).

import shlex

MASKS = config["masks"]
SEG = config["segmenter"]
# "auto" resolves on the compute node, where the GPU is: request one unless told cpu.
SEG_GPU = 0 if SEG["device"] == "cpu" else 1
# Training: cluster.train_gpus GPUs (one torchrun process each), capped by the batch size.
SEG_TRAIN_GPUS = train_gpus(SEG["device"], SEG["batch_size"])
MASK_SOURCES = ("model", "checkpoint", "gt")


def segmenter_checkpoint():
    """The user's weights file of source `checkpoint` (an input, so a new file re-runs it)."""
    if not SEG["checkpoint"]:
        raise ValueError("masks source 'checkpoint' needs segmenter.checkpoint: the path of a "
                         "Mask R-CNN weights file (see workflow/schemas/config.schema.yaml)")
    return SEG["checkpoint"]


def masks_inputs(videos):
    """model -> the trained segmenter and the frames; checkpoint -> the user's file and the
    frames; gt -> the annotations (the release)."""

    def inputs(wildcards):
        out = {"index": rules.index.output.csv}
        if wildcards.source == "gt":
            out["release"] = release_input()
        else:
            out["frames"] = [f.format(video=wildcards.get("video")) for f in
                             job_files(videos, f"{RES}/frames/{{video}}.h5")]
            out["weights"] = (rules.train_segmenter.output.model if wildcards.source == "model"
                              else segmenter_checkpoint())
        return out

    return inputs


def masks_args(videos):
    """Source-specific command-line arguments, quoted for the shell."""
    frames = job_args(videos, ("--frames", f"{RES}/frames/{{video}}.h5"))

    def args(wildcards, input):
        if wildcards.source == "gt":
            return f"--release {shlex.quote(input.release)}"
        return (f"{frames(wildcards)} --weights {shlex.quote(input.weights)}"
                f" --segmenter-json {shlex.quote(cfg_json('segmenter'))}")

    return args


rule train_segmenter:
    input:
        index=rules.index.output.csv,
        release=release_input(),
        # every indexed video: train-split frames to train, test-split frames to evaluate
        frames=lambda wc: expand(f"{RES}/frames/{{video}}.h5", video=videos()),
    output:
        model=f"{RES}/segmenter/model.pt",
        metrics=f"{RES}/segmenter/metrics.json",
        losses=f"{RES}/segmenter/losses.csv",
    params:
        # the checkpoint keys name the weights of masks.source = checkpoint, not this training
        cfg=cfg_json("segmenter", without=("checkpoint", "checkpoint_class_map")),
        code=code("pipeline.masks.train"),
    log:
        f"{LOGS}/train_segmenter.log",
    benchmark:
        f"{BENCH}/train_segmenter.tsv"
    threads: TRAIN_THREADS
    resources:
        mem_mb=4000 if SEG["depth"] <= 34 else 16000,
        # minutes; room for ~1 s per step (a CPU step of the default is ~0.5 s)
        runtime=max(30, SEG["iterations"] // 60),
        gpu=SEG_TRAIN_GPUS,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        train_launcher(SEG_TRAIN_GPUS) + " -m pipeline.masks.train --index {input.index:q}"
        " --release {input.release:q} --frames-dir {RES}/frames --out {output.model:q}"
        " --metrics {output.metrics:q}"
        " --losses {output.losses:q} --threads {threads} --config-json {params.cfg:q}"
        " > {log:q} 2>&1"


for _suffix, _job, _vids in video_jobs():

    rule:
        name:
            f"masks{_suffix}"
        input:
            unpack(masks_inputs(_vids)),
        output:
            job_files(_vids, f"{RES}/masks/{{source}}/{{video}}.h5"),
        wildcard_constraints:
            source="|".join(MASK_SOURCES),
            video=unsharded_video_re(),
        params:
            args=masks_args(_vids),
            videos=job_args(_vids, ("--video", "{video}"),
                            ("--out", f"{RES}/masks/{{source}}/{{video}}.h5")),
            cfg=cfg_json("masks"),
            code=code("pipeline.masks.run"),
        log:
            f"{LOGS}/masks/{{source}}/{_job}.log",
        benchmark:
            f"{BENCH}/masks/{{source}}/{_job}.tsv"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=20 * job_size(_vids),
            gpu=lambda wc: 0 if wc.source == "gt" else SEG_GPU,
        conda:
            "../../envs/actorseg.yaml"
        shell:
            "python -m pipeline.masks.run {params.videos} --source {wildcards.source}"
            " --index {input.index:q} {params.args} --threads {threads}"
            " --config-json {params.cfg:q} > {log:q} 2>&1"

    shard_profile_resources("masks", _suffix, _vids)


rule all_masks:
    localrule: True
    input:
        # every indexed video (train and test: the region model trains on these regions too)
        lambda wc: expand(f"{RES}/masks/{MASKS['source']}/{{video}}.h5", video=videos()),
