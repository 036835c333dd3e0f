# Helpers shared by the rule files: paths, config sections as JSON, code hashes, the index.

import json

from pipeline.index import read_index
from pipeline.provenance import code_hash

RELEASE = config["dataset"]["release"]
RES = "results"
LOGS = f"{RES}/logs"
BENCH = f"{RES}/benchmarks"

# A2D ids may start with '-': shell commands always pass them as --video={wildcards.video:q}.
wildcard_constraints:
    video=r"[A-Za-z0-9_-]+",


def cfg_json(name):
    """Config section `name` as canonical JSON: passed to a stage as --config-json, and a
    params entry, so a config change re-runs exactly the stages that read that section."""
    return json.dumps(config[name], sort_keys=True, separators=(",", ":"))


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
