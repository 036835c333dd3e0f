# Helpers shared by the rule files: paths, config sections as JSON, code hashes, the index.

import json
import os
import re
import shlex

from snakemake.logging import logger
from snakemake.resources import Resources

from pipeline.index import read_index
from pipeline.provenance import code_hash
from pipeline.shards import make_shards, planned_videos

RELEASE = config["dataset"]["release"]
RES = "results"
LOGS = f"{RES}/logs"
BENCH = f"{RES}/benchmarks"
#: Threads of a training job (segmenter, stage 1, Ji et al.): cluster.train_threads.
TRAIN_THREADS = config["cluster"]["train_threads"]

# A2D ids may start with '-': shell commands always pass them as --video={wildcards.video:q}.
VIDEO_RE = r"[A-Za-z0-9_-]+"


wildcard_constraints:
    video=VIDEO_RE,


def cfg_json(name, without=(), replace=None):
    """Config section `name` as canonical JSON: passed to a stage as --config-json, and a
    params entry, so a config change re-runs exactly the stages that read that section.
    `without`: top-level keys of the section that the stage does not read. They are left out,
    so that changing them re-runs only the stages that read them; the stage takes their
    schema defaults, which it never uses. `replace`: top-level keys given other values (e.g.
    a DAG-made file's path for a symbolic config value)."""
    section = {k: v for k, v in config[name].items() if k not in without}
    section.update(replace or {})
    return json.dumps(section, sort_keys=True, separators=(",", ":"))


def code(module):
    """Content hash of a stage module and the pipeline modules it imports (params rerun trigger)."""
    return code_hash(module)


def release_input():
    """The release folder as an input: produced by rule synth when the synthetic data is on."""
    return RELEASE


def index_table(wildcards=None):
    return read_index(checkpoints.index.get().output.csv)


def videos(split=None):
    table = index_table()
    if split is not None:
        table = table[table.split == split]
    return sorted(table.video.unique())


def final_targets():
    """What `snakemake` with no target builds: grows with the stages."""
    return [f"{RES}/report/index.html"]


def train_gpus(device, batch_size):
    """GPUs of a training job: cluster.train_gpus, at most one per item of the stage's global
    batch (a process needs at least one item per step); 0 when the stage's device is cpu."""
    if device == "cpu":
        return 0
    return max(1, min(config["cluster"]["train_gpus"], batch_size))


def train_launcher(gpus):
    """How a training stage is started: `python` for one process, torchrun with one DDP process
    per GPU on this node otherwise (the stage reads its rank from torchrun's environment)."""
    if gpus <= 1:
        return "python"
    return f"torchrun --standalone --nproc_per_node {gpus}"


# -- shards: several videos per job (cluster.videos_per_job) ------------------------------------
# A per-video stage is one rule per *job*: with videos_per_job 1 a rule with a {video} wildcard,
# exactly as without sharding; otherwise one rule per shard of pipeline.shards.make_shards
# (named <stage>_s<16 hex>), whose outputs are the per-video files of its videos, plus the
# per-video rule for any video outside the plan. Snakemake outputs cannot be functions, so the
# video list must be known when Snakemake reads the workflow: pipeline.shards.planned_videos
# takes it from the synthetic plan, the release's videoset.csv (on_bad_video: fail) or the index.
VIDEOS_PER_JOB = config["cluster"]["videos_per_job"]
INDEX_CSV = f"{RES}/index/frames.csv"
PLANNED_VIDEOS, PLANNED_FROM = (
    planned_videos(config, INDEX_CSV) if VIDEOS_PER_JOB > 1 else (None, "videos_per_job 1")
)
if VIDEOS_PER_JOB > 1 and PLANNED_VIDEOS is None:
    logger.warning(
        f"cluster.videos_per_job {VIDEOS_PER_JOB}: one job per video this run ({PLANNED_FROM})"
    )
elif PLANNED_VIDEOS is not None and os.path.exists(INDEX_CSV):
    # an index of another config or release: the index job re-runs (its params or input
    # changed) and then holds the planned videos; say so, as its videos are what jobs get
    _indexed = set(read_index(INDEX_CSV).video)
    if _indexed != {v for v, _ in PLANNED_VIDEOS}:
        logger.warning(
            f"shards planned from the {PLANNED_FROM} ({len(PLANNED_VIDEOS)} videos) differ from "
            f"{INDEX_CSV} ({len(_indexed)} videos): the index is expected to be rebuilt"
        )


def video_jobs(split=None):
    """[(rule name suffix, job id, videos)]: ("", "{video}", None) is the per-video rule (its
    video wildcard excludes the sharded videos); ("_s<hex>", "s<hex>", [ids]) one shard each.
    split: shard only the videos of that split (the predict rules run on test videos)."""
    if PLANNED_VIDEOS is None:
        return [("", "{video}", None)]
    ids = [v for v, s in PLANNED_VIDEOS if split is None or s == split]
    shards = make_shards(ids, VIDEOS_PER_JOB)
    return [("", "{video}", None)] + [(f"_{name}", name, vids) for name, vids in shards.items()]


def unsharded_video_re(split=None):
    """Wildcard constraint of the per-video rule: any id except the sharded ones and the shard
    names (a shard's log and benchmark file, s<hex>.tsv, sit beside the one-video jobs')."""
    sharded = [x for _, job, vids in video_jobs(split) if vids for x in (job, *vids)]
    if not sharded:
        return VIDEO_RE
    # the pattern goes on after the wildcard (".h5", "/"): "not followed by an id character"
    # ends the excluded id there ("$" would never match inside a path pattern)
    ids = "|".join(map(re.escape, sorted(sharded)))
    return rf"(?!(?:{ids})(?![A-Za-z0-9_-])){VIDEO_RE}"


def job_files(videos, pattern):
    """The files of `pattern` (a path with {video}) for a job: the pattern itself for the
    per-video rule (videos None), one path per video for a shard."""
    return [pattern] if videos is None else [pattern.replace("{video}", v) for v in videos]


def job_args(videos, *options):
    """Shell arguments of a job, a function of the wildcards: each (flag, pattern) in options
    once per video, in the order of the videos, e.g. --video=A --out results/flow/A.h5."""

    def args(wildcards):
        wc = dict(wildcards.items())
        vids = [wildcards.video] if videos is None else videos
        return " ".join(f"{flag}={shlex.quote(pattern.replace('{video}', v).format(**wc))}"
                        for v in vids for flag, pattern in options)

    return args


def job_size(videos):
    """Videos in a job: resources (runtime, memory of what a job holds) scale with it."""
    return 1 if videos is None else len(videos)


def shard_profile_resources(stage, suffix, videos):
    """Give shard rule `<stage><suffix>` its stage's --set-resources / --set-threads entries
    (a profile's set-resources/set-threads under the stage's name): Snakemake matches them to
    rule names exactly, so `flow_s<hex>` would otherwise get the default resources (and the
    default partition). A whole-number runtime is per video there: scaled by the shard's size.
    Call right after the shard rule's definition."""
    if videos is None:
        return
    settings = workflow.resource_settings
    job_rule = workflow.get_rule(stage + suffix)
    over = settings.overwrite_resources.get(stage)
    if over:
        over = Resources.from_mapping(over)
        job_rule.resources.update(over)
        runtime = over.get("runtime")
        if runtime is not None and not runtime.is_evaluable() and isinstance(runtime.value, int):
            job_rule.resources["runtime"] = runtime.value * len(videos)
    threads = settings.overwrite_threads.get(stage)
    if threads is not None:
        job_rule.resources["_cores"] = threads
