"""The workflow profiles: the file name Snakemake reads, a SLURM dry run, per-rule resources.

A dry run with ``executor: slurm`` needs no SLURM installation (checked: it runs without any
SLURM command on PATH). Where they exist, the plugin (2.8.0) runs the read-only query
``scontrol show config`` (for MinJobAge) even in a dry run and tolerates its failure. The test
puts fake sbatch/squeue/sinfo/scontrol/... first on PATH that record being called and fail, and
checks that nothing but read-only queries was called: no sbatch, srun or scancel.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_SYNTH

PROFILES = ROOT / "profiles"
SUBMITTING = ("sbatch", "srun", "scancel")
#: Rules started by torchrun with cluster.train_gpus > 1 (one DDP process per GPU).
TRAINING = ("train_segmenter", "region_stage1", "region_stage2", "e2e_train",
            "e2e_train_zero_shot")
SLURM_TOOLS = ("sbatch", "squeue", "sinfo", "sacct", "scontrol", "sacctmgr", "srun", "scancel")
# Python builtins as partition names: unquoted, Snakemake would evaluate them to functions.
ENV = {"SLURM_ACCOUNT": "acct_test", "SLURM_PARTITION": "all", "SLURM_GPU_PARTITION": "max"}


def smk_rules() -> dict[str, bool]:
    """{rule name: is a localrule} of every rule and checkpoint in workflow/rules/*.smk; a
    per-video stage made in a loop (``rule:`` with ``name: f"<stage>{_suffix}"``, one rule per
    shard) under its stage's name, the name its set-resources entry has."""
    rules: dict[str, bool] = {}
    head = (r"^\s*(?:(?:rule|checkpoint)\s+(\w+):"
            r"|rule:\s*\n\s*name:\s*\n\s*f\"(\w+)\{_suffix\}\")\s*$")
    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        parts = re.split(head, smk.read_text(), flags=re.M)
        names = [a or b for a, b in zip(parts[1::3], parts[2::3])]
        blocks = [None, *[x for pair in zip(names, parts[3::3]) for x in pair]]
        for name, body in zip(blocks[1::2], blocks[2::2]):
            rules[name] = "localrule: True" in body
    return rules


def fake_slurm_bin(tmp: Path) -> tuple[Path, Path]:
    """A folder of fake SLURM commands that log their call to ``marker`` and exit 1."""
    bindir, marker = tmp / "fakebin", tmp / "slurm_called.txt"
    bindir.mkdir()
    for tool in SLURM_TOOLS:
        exe = bindir / tool
        exe.write_text(f"#!/bin/sh\necho \"{tool} $*\" >> '{marker}'\nexit 1\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return bindir, marker


def snakemake(workdir: Path, config: Path, *args: str, env: dict | None = None):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("name", ["local", "slurm"])
def test_profile_file_name(name):
    """Snakemake 9.27 reads profile.yaml (config.yaml too); with both present the one read
    depends on the directory order, so exactly one file, profile.yaml, may exist."""
    files = sorted(p.name for p in (PROFILES / name).iterdir() if p.suffix == ".yaml")
    assert files == ["profile.yaml"]
    assert not (PROFILES / "default").exists(), "profiles/default would be used by every run"


def test_every_cluster_rule_has_attempt_scaled_memory():
    """Every non-local rule is listed in set-resources, with memory that grows on retry."""
    prof = yaml.safe_load((PROFILES / "slurm/profile.yaml").read_text())
    assert prof["retries"] >= 1
    rules = smk_rules()
    cluster_rules = {r for r, local in rules.items() if not local}
    assert {"frames", "flow", "masks", "train_segmenter"} <= cluster_rules
    listed = set(prof["set-resources"])
    assert cluster_rules <= listed, f"rules without resources: {sorted(cluster_rules - listed)}"
    assert listed <= set(rules), f"unknown rules: {sorted(listed - set(rules))}"
    for rule, res in {**prof["set-resources"], "default": prof["default-resources"]}.items():
        mem = [eval(str(res["mem_mb"]), {"attempt": a}) for a in (1, 2, 3)]
        assert mem[0] >= 1000 and mem[0] < mem[1] < mem[2], (rule, mem)


@pytest.mark.slow
@pytest.mark.parametrize("videos_per_job", [1, 2])
def test_slurm_dry_run_prints_resources_and_submits_nothing(tmp_path, videos_per_job):
    """Also with shard jobs (rules <stage>_s<hex>): they get their stage's set-resources, the
    runtime per video times the shard's videos."""
    work = tmp_path / "work"
    work.mkdir()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "synthetic": dict(TINY_SYNTH, videos=2), "dataset": {"release": "results/synthetic/Release"},
        # ptlflow on device auto: flow is a GPU stage, as with config/a2d.yaml
        "flow": {"backend": "ptlflow", "checkpoint": "weights/flownet2.ckpt"},
        # two GPUs per training job (batch sizes >= 2 here): torchrun, gpu=2 on one node
        "cluster": {"train_gpus": 2, "videos_per_job": videos_per_job}}))
    # The DAG past the index depends on the index (a checkpoint): build it locally first.
    proc = snakemake(work, cfg, "--workflow-profile", "none", "--cores", "1",
                     "results/index/frames.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    video = (work / "results/index/frames.csv").read_text().splitlines()[1].split(",")[0]

    bindir, marker = fake_slurm_bin(tmp_path)
    env = {**os.environ, **ENV, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    proc = snakemake(work, cfg, "-n", "--workflow-profile", str(PROFILES / "slurm"),
                     "all_flow", "all_masks", "region_predictions_table1",
                     f"results/masks/gt/{video}.h5", env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "This was a dry-run" in out
    called = marker.read_text().splitlines() if marker.exists() else []
    assert not [c for c in called if c.split()[0] in SUBMITTING], called
    assert set(c.split()[0] for c in called) <= {"scontrol", "sinfo", "squeue", "sacct"}, called
    assert "profiles/slurm for setting default command line arguments" in out

    jobs = parse_jobs(out)
    assert {"frames", "flow", "masks", "train_segmenter", "region_stage1", "region_features",
            "region_stage2", "predict_baseline", "predict_region"} <= set(jobs)
    for rule, resources in jobs.items():
        for res in resources:
            assert res["slurm_account"] == "acct_test", (rule, res)
            gpu = int(res.get("gpu", "0")) >= 1
            assert res["slurm_partition"] == ("max" if gpu else "all"), (rule, res)
            if gpu:
                assert int(res["cpus_per_gpu"]) >= 1, (rule, res)
            if rule in TRAINING:
                assert (res.get("gpu"), res.get("nodes")) == ("2", "1"), (rule, res)
            elif gpu:
                assert res["gpu"] == "1", (rule, res)
    assert all(r.get("gpu") == "1" for r in jobs["flow"])
    for module in ("masks.train", "region.train_baseline", "region.train_region"):
        assert f"torchrun --standalone --nproc_per_node 2 -m pipeline.{module} " in out, module
    # gt masks read .mat files: CPU partition, no GPU; model masks on the GPU partition
    model_jobs = 2 if videos_per_job == 1 else 1  # both videos in one shard
    assert sorted(r.get("gpu", "0") for r in jobs["masks"]) == ["0"] + ["1"] * model_jobs
    assert {r["mem_mb"] for r in jobs["flow"]} == {"12000"}  # attempt 1
    prof = yaml.safe_load((PROFILES / "slurm/profile.yaml").read_text())["set-resources"]
    assert len(jobs["flow"]) == model_jobs
    assert sum(int(r["runtime"]) for r in jobs["flow"]) == 2 * prof["flow"]["runtime"]


def parse_jobs(out: str) -> dict[str, list[dict[str, str]]]:
    """{rule: [resources of each job]} from a dry run's job listing."""
    jobs: dict[str, list[dict[str, str]]] = {}
    rule = None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if m:
            rule = re.sub(r"_s[0-9a-f]{16}$", "", m.group(1))  # a shard job: its stage
        elif rule and line.strip().startswith("resources:"):
            items = line.split("resources:", 1)[1].split(", ")
            jobs.setdefault(rule, []).append(dict(i.strip().split("=", 1) for i in items))
    return jobs


@pytest.mark.slow
def test_local_profile_dry_run(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"synthetic": dict(TINY_SYNTH, videos=2),
                                   "dataset": {"release": "results/synthetic/Release"}}))
    proc = snakemake(tmp_path, cfg, "-n", "--workflow-profile", str(PROFILES / "local"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "profiles/local for setting default command line arguments" in out
    assert "rule synth:" in out and "slurm" not in out
