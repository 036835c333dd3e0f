# Ji et al. 2018 end-to-end joint actor-action model (pipeline.e2e). Variants are wildcards
# sharing the frames and flow caches:
#   {variant}   full | maskrcnn_pairs | no_mask | no_temporal | no_flow | joint_off  (Table 3)
#   {zs_actor}  adult .. dog: the full model trained without that actor's action labels (4.4)
# Label maps go to results/predictions/e2e_{variant}/ and are scored by rule evaluate
# (evaluate.smk) into results/eval/e2e_{variant}.json; detections (mAP, Table 2) to
# results/predictions/e2e_{variant}/detections/ -> results/eval/e2e_{variant}.detection.json.
# Targets: e2e_full (default model, trained + evaluated), ji_table1, ji_table2; on request:
# ji_table3 (all ablations), ji_zero_shot (7 extra trainings).

E2E = config["e2e_model"]
E2E_DIR = f"{RES}/e2e"
# A GPU is requested only when the stages may run on CUDA ("auto" resolves on the node).
E2E_GPU = 0 if E2E["device"] == "cpu" else 1
# Training jobs: cluster.train_gpus GPUs (one torchrun process each), capped by the batch size.
E2E_TRAIN_GPUS = train_gpus(E2E["device"], E2E["batch_size"])
E2E_VARIANTS = ["full", "maskrcnn_pairs", "no_mask", "no_temporal", "no_flow", "joint_off"]
E2E_NO_FLOW = ("maskrcnn_pairs", "no_flow")
ZS_ACTORS = ["adult", "baby", "ball", "bird", "car", "cat", "dog"]
# Keys used only at inference: changing them re-runs predictions, not training.
E2E_INFERENCE_KEYS = ("score_thresh", "mask_thresh")


wildcard_constraints:
    variant="|".join(E2E_VARIANTS),
    zs_actor="|".join(ZS_ACTORS),


# e2e_model.weights / motion_weights "segmenter": start from the Mask R-CNN trained here (rule
# train_segmenter; the motion stream takes its backbone); the stage only ever sees a path, the
# model file, which is also an input of the training.
E2E_SEGMENTER_KEYS = [k for k in ("weights", "motion_weights") if E2E.get(k) == "segmenter"]
E2E_FROM_SEGMENTER = bool(E2E_SEGMENTER_KEYS)
SEGMENTER_MODEL = f"{RES}/segmenter/model.pt"


def e2e_train_cfg():
    return cfg_json("e2e_model", without=E2E_INFERENCE_KEYS,
                    replace={key: SEGMENTER_MODEL for key in E2E_SEGMENTER_KEYS})


def e2e_uses_flow(variant):
    return variant not in E2E_NO_FLOW


def e2e_train_inputs(variant):
    def inputs(wc):
        out = {"frames": [f"{RES}/frames/{v}.h5" for v in videos("train")]}
        if E2E_FROM_SEGMENTER:
            out["segmenter"] = SEGMENTER_MODEL
        if e2e_uses_flow(variant or wc.variant):
            out["flow"] = [f"{RES}/flow/{v}.h5" for v in videos("train")]
        return out
    return inputs


def e2e_flow_arg(variant):
    return lambda wc: f"--flow-dir {RES}/flow" if e2e_uses_flow(variant or wc.variant) else ""


def e2e_video_flow(videos):
    """The flow caches of a predict job's videos (none for the variants without flow)."""
    flow = job_files(videos, f"{RES}/flow/{{video}}.h5")
    return lambda wc: [f.format(video=wc.get("video")) for f in flow] \
        if e2e_uses_flow(wc.variant) else []


def e2e_test_detections(pattern):
    return lambda wc: [pattern.format(video=v, **wc) for v in videos("test")]


rule e2e_train:
    input:
        unpack(e2e_train_inputs(None)),
        index=f"{RES}/index/frames.csv",
        release=release_input(),
    output:
        ckpt=f"{E2E_DIR}/{{variant}}/model.pt",
        csv=f"{E2E_DIR}/{{variant}}/loss.csv",
        png=f"{E2E_DIR}/{{variant}}/loss.png",
    params:
        flow=e2e_flow_arg(None),
        cfg=e2e_train_cfg(),
        code=code("pipeline.e2e.train"),
    log:
        f"{LOGS}/e2e_train/{{variant}}.log",
    benchmark:
        f"{BENCH}/e2e_train/{{variant}}.tsv"
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=E2E_TRAIN_GPUS,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        train_launcher(E2E_TRAIN_GPUS) + " -m pipeline.e2e.train --release {input.release:q}"
        " --index {input.index:q} --frames-dir {RES}/frames {params.flow}"
        " --variant {wildcards.variant}"
        " --out {output.ckpt:q} --loss-csv {output.csv:q} --loss-png {output.png:q}"
        " --threads {threads} --config-json {params.cfg:q} > {log:q} 2>&1"


rule e2e_train_zero_shot:
    input:
        unpack(e2e_train_inputs("full")),
        index=f"{RES}/index/frames.csv",
        release=release_input(),
    output:
        ckpt=f"{E2E_DIR}/zeroshot/{{zs_actor}}/model.pt",
        csv=f"{E2E_DIR}/zeroshot/{{zs_actor}}/loss.csv",
        png=f"{E2E_DIR}/zeroshot/{{zs_actor}}/loss.png",
    params:
        cfg=e2e_train_cfg(),
        code=code("pipeline.e2e.train"),
    log:
        f"{LOGS}/e2e_train_zero_shot/{{zs_actor}}.log",
    benchmark:
        f"{BENCH}/e2e_train_zero_shot/{{zs_actor}}.tsv"
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=E2E_TRAIN_GPUS,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        train_launcher(E2E_TRAIN_GPUS) + " -m pipeline.e2e.train --release {input.release:q}"
        " --index {input.index:q} --frames-dir {RES}/frames --flow-dir {RES}/flow --variant full"
        " --zero-shot-actor {wildcards.zs_actor} --out {output.ckpt:q}"
        " --loss-csv {output.csv:q} --loss-png {output.png:q}"
        " --threads {threads} --config-json {params.cfg:q} > {log:q} 2>&1"


# Predictions are asked for test videos: shards of the test split (other videos: per video).
for _suffix, _job, _vids in video_jobs("test"):

    rule:
        name:
            f"e2e_predict{_suffix}"
        input:
            ckpt=f"{E2E_DIR}/{{variant}}/model.pt",
            index=f"{RES}/index/frames.csv",
            frames=job_files(_vids, f"{RES}/frames/{{video}}.h5"),
            flow=e2e_video_flow(_vids),
        output:
            h5=job_files(_vids, f"{RES}/predictions/e2e_{{variant}}/{{video}}.h5"),
            png=[directory(d) for d in
                 job_files(_vids, f"{RES}/predictions/e2e_{{variant}}/png/{{video}}")],
            det=job_files(_vids, f"{RES}/predictions/e2e_{{variant}}/detections/{{video}}.h5"),
        wildcard_constraints:
            video=unsharded_video_re("test"),
        params:
            videos=job_args(
                _vids, ("--video", "{video}"),
                ("--out", f"{RES}/predictions/e2e_{{variant}}/{{video}}.h5"),
                ("--png-dir", f"{RES}/predictions/e2e_{{variant}}/png/{{video}}"),
                ("--detections-out", f"{RES}/predictions/e2e_{{variant}}/detections/{{video}}.h5")),
            flow=e2e_flow_arg(None),
            cfg=cfg_json("e2e_model"),
            code=code("pipeline.e2e.predict"),
        log:
            f"{LOGS}/e2e_predict/{{variant}}/{_job}.log",
        benchmark:
            f"{BENCH}/e2e_predict/{{variant}}/{_job}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=20 * job_size(_vids),
            gpu=E2E_GPU,
        conda:
            "../../envs/actorseg.yaml"
        shell:
            "python -m pipeline.e2e.predict --checkpoint {input.ckpt:q} --index {input.index:q}"
            " {params.videos} --frames-dir {RES}/frames {params.flow}"
            " --config-json {params.cfg:q} > {log:q} 2>&1"

    shard_profile_resources("e2e_predict", _suffix, _vids)

    rule:
        name:
            f"e2e_predict_zero_shot{_suffix}"
        input:
            ckpt=f"{E2E_DIR}/zeroshot/{{zs_actor}}/model.pt",
            index=f"{RES}/index/frames.csv",
            frames=job_files(_vids, f"{RES}/frames/{{video}}.h5"),
            flow=job_files(_vids, f"{RES}/flow/{{video}}.h5"),
        output:
            det=job_files(_vids, f"{E2E_DIR}/zeroshot/{{zs_actor}}/detections/{{video}}.h5"),
        wildcard_constraints:
            video=unsharded_video_re("test"),
        params:
            videos=job_args(
                _vids, ("--video", "{video}"),
                ("--detections-out", f"{E2E_DIR}/zeroshot/{{zs_actor}}/detections/{{video}}.h5")),
            cfg=cfg_json("e2e_model"),
            code=code("pipeline.e2e.predict"),
        log:
            f"{LOGS}/e2e_predict_zero_shot/{{zs_actor}}/{_job}.log",
        benchmark:
            f"{BENCH}/e2e_predict_zero_shot/{{zs_actor}}/{_job}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=20 * job_size(_vids),
            gpu=E2E_GPU,
        conda:
            "../../envs/actorseg.yaml"
        shell:
            "python -m pipeline.e2e.predict --checkpoint {input.ckpt:q} --index {input.index:q}"
            " {params.videos} --frames-dir {RES}/frames --flow-dir {RES}/flow"
            " --config-json {params.cfg:q} > {log:q} 2>&1"

    shard_profile_resources("e2e_predict_zero_shot", _suffix, _vids)


rule e2e_detect_eval:
    input:
        release=release_input(),
        index=f"{RES}/index/frames.csv",
        det=e2e_test_detections(f"{RES}/predictions/e2e_{{variant}}/detections/{{video}}.h5"),
    output:
        f"{RES}/eval/e2e_{{variant}}.detection.json",
    params:
        dets=lambda wc: f"{RES}/predictions/e2e_{wc.variant}/detections",
        code=code("pipeline.e2e.detect_eval"),
    log:
        f"{LOGS}/e2e_detect_eval/{{variant}}.log",
    benchmark:
        f"{BENCH}/e2e_detect_eval/{{variant}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.e2e.detect_eval --release {input.release:q} --index {input.index:q}"
        " --detections-dir {params.dets:q} --out {output:q} > {log:q} 2>&1"


rule e2e_zero_shot_detect_eval:
    input:
        release=release_input(),
        index=f"{RES}/index/frames.csv",
        det=e2e_test_detections(f"{E2E_DIR}/zeroshot/{{zs_actor}}/detections/{{video}}.h5"),
    output:
        f"{E2E_DIR}/zeroshot/{{zs_actor}}/detection.json",
    params:
        dets=lambda wc: f"{E2E_DIR}/zeroshot/{wc.zs_actor}/detections",
        code=code("pipeline.e2e.detect_eval"),
    log:
        f"{LOGS}/e2e_zero_shot_detect_eval/{{zs_actor}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.e2e.detect_eval --release {input.release:q} --index {input.index:q}"
        " --detections-dir {params.dets:q} --out {output:q} > {log:q} 2>&1"


# -- aggregates ---------------------------------------------------------------------------------
# Table 3 rows of pipeline.tables (ji_table3) -> our variant. "Ours w/o Mask + SM": our no_mask
# variant fills boxes instead of running SharpMask; its predictions' provenance says so.
JI_TABLE3_ROWS = {"full": "full", "maskrcnn": "maskrcnn_pairs", "no_mask_sm": "no_mask",
                  "no_temporal": "no_temporal", "no_flow": "no_flow", "no_joint": "joint_off"}


rule e2e_full:
    """The default end-to-end model: trained, its test predictions scored (segmentation and
    detection)."""
    localrule: True
    input:
        f"{RES}/eval/e2e_full.json",
        f"{RES}/eval/e2e_full.detection.json",


rule ji_table1:
    """Ji et al. Table 1: joint actor-action segmentation of the full model (test split)."""
    input:
        ours=f"{RES}/eval/e2e_full.json",
    output:
        md=f"{RES}/tables/ji_table1.md",
        csv=f"{RES}/tables/ji_table1.csv",
    params:
        code=code("pipeline.tables"),
    log:
        f"{LOGS}/tables/ji_table1.log",
    localrule: True
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.tables --name ji_table1 --inputs ours={input.ours:q}"
        " --out {RES}/tables/ji_table1 > {log:q} 2>&1"


rule ji_table2:
    """Ji et al. Table 2: detection mAP of actors, actions and pairs (test split)."""
    input:
        ours=f"{RES}/eval/e2e_full.detection.json",
    output:
        md=f"{RES}/tables/ji_table2.md",
        csv=f"{RES}/tables/ji_table2.csv",
    params:
        code=code("pipeline.tables"),
    log:
        f"{LOGS}/tables/ji_table2.log",
    localrule: True
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.tables --name ji_table2 --inputs ours={input.ours:q}"
        " --out {RES}/tables/ji_table2 > {log:q} 2>&1"


rule ji_table3:
    """Ji et al. Table 3: the ablations (trains every variant; run on request)."""
    input:
        **{row: f"{RES}/eval/e2e_{variant}.json" for row, variant in JI_TABLE3_ROWS.items()},
    output:
        md=f"{RES}/tables/ji_table3.md",
        csv=f"{RES}/tables/ji_table3.csv",
    params:
        inputs=lambda wc, input: " ".join(f"{k}={input[k]}" for k in JI_TABLE3_ROWS),
        code=code("pipeline.tables"),
    log:
        f"{LOGS}/tables/ji_table3.log",
    localrule: True
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.tables --name ji_table3 --inputs {params.inputs}"
        " --out {RES}/tables/ji_table3 > {log:q} 2>&1"


rule ji_zero_shot:
    """Ji et al. section 4.4 / Fig. 4: zero-shot AP and r_zs per actor (7 extra trainings;
    run on request)."""
    input:
        full=f"{RES}/eval/e2e_full.detection.json",
        zs=expand(f"{E2E_DIR}/zeroshot/{{zs_actor}}/detection.json", zs_actor=ZS_ACTORS),
    output:
        md=f"{RES}/tables/ji_zero_shot.md",
        csv=f"{RES}/tables/ji_zero_shot.csv",
        png=f"{RES}/tables/ji_zero_shot.png",
    params:
        zs=" ".join(f"{a}={E2E_DIR}/zeroshot/{a}/detection.json" for a in ZS_ACTORS),
        code=code("pipeline.e2e.zero_shot"),
    log:
        f"{LOGS}/tables/ji_zero_shot.log",
    localrule: True
    conda:
        "../../envs/actorseg.yaml"
    shell:
        "python -m pipeline.e2e.zero_shot --full {input.full:q} --zero-shot {params.zs}"
        " --out {RES}/tables/ji_zero_shot > {log:q} 2>&1"
