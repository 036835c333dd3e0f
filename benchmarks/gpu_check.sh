#!/usr/bin/env bash
# GPU check: time per frame of the per-video stages at A2D size on one GPU, beside Dang et al.'s
# K80 numbers (flow 350, masks 300, region network 450 ms per frame). Target: <= 10 minutes on
# one GPU, from a fresh checkout with the package installed (pip install -e .).
#
#   benchmarks/gpu_check.sh [WORKDIR]          # on a machine with a CUDA GPU
#   benchmarks/gpu_check.sh --cpu-smoke [DIR]  # no GPU: the same script at tiny sizes on the CPU
#                                              # (checks the script, measures nothing useful)
#
# What runs (snakemake, one job at a time on the GPU: --resources gpu=1):
#   synthetic release at A2D size: 20 videos, 320 px high, 568 wide (clips320H), 3 annotated
#   frames each; flow: ptlflow FlowNet2 with RANDOM weights (timing only: the script saves a
#   randomly initialised model as the checkpoint; no download); masks: Mask R-CNN R-101-FPN
#   trained here for a few steps (timing of inference only); region model: two-stream
#   ResNet-101 front-end at output stride 8, stage 1 and stage 2 a few steps each, feature cache
#   and predictions (baseline and region model); AMP on. Every stage's device is `cuda`, not
#   `auto`: a CUDA error fails the job (and this script) instead of falling back to the CPU.
# Output: results/tables/timing.md of the run (ms per frame per stage, job start-up included,
# beside the paper's per-frame times), printed at the end. Put the numbers in the README.
set -euo pipefail

smoke=0
if [[ "${1:-}" == "--cpu-smoke" ]]; then
    smoke=1
    shift
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/actorseg_gpu_check.XXXXXX")}"
mkdir -p "$work"
python="${PYTHON:-python}"
echo "# gpu_check: repo $repo, workdir $work, smoke $smoke"
echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) CPUs"

if [[ $smoke -eq 0 ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$python" - <<'EOF'
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_check: torch sees no CUDA device (torch %s, CUDA %s)"
                     % (torch.__version__, torch.version.cuda))
x = torch.randn(64, 64, device="cuda")
torch.cuda.synchronize()
print(f"# torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)},"
      f" matmul ok ({float((x @ x).sum()):.1f})")
EOF
    device=cuda
    # A2D size (clips320H: 320 px high; most clips are 568 wide)
    synth='{"enabled": true, "videos": 20, "seed": 0, "height": 320, "widths": [568],
            "frames": [40, 48], "annotated": 3, "test_fraction": 0.25}'
    flow_model=flownet2
    depth=101
    input_size='[320, 568]'
    seg_size='"min_size": 320, "max_size": 568'
    steps=20
else
    device=cpu
    synth='{"enabled": true, "videos": 4, "seed": 0, "height": 48, "widths": [64],
            "frames": [12, 14], "annotated": 2, "test_fraction": 0.5}'
    flow_model=flownets
    depth=18
    input_size='[37, 51]'
    seg_size='"min_size": 48, "max_size": 64'
    steps=2
fi

# random-weights flow checkpoint (timing only), in the ptlflow checkpoint format the stage reads
ckpt="$work/random_${flow_model}.ckpt"
"$python" - "$flow_model" "$ckpt" <<'EOF'
import sys
import ptlflow
import torch
model = ptlflow.get_model(sys.argv[1])
torch.save({"state_dict": model.state_dict()}, sys.argv[2])
print(f"# {sys.argv[1]}: random weights, {sum(p.numel() for p in model.parameters())} parameters")
EOF

cat > "$work/gpu_check.yaml" <<EOF
synthetic: $synth
dataset: {release: results/synthetic/Release}
flow: {backend: ptlflow, model: $flow_model, checkpoint: $ckpt, device: $device, batch_size: 4}
segmenter: {device: $device, depth: $depth, iterations: $steps, warmup_iterations: 1,
            checkpoint_every: $steps, log_every: 1, batch_size: 2, $seg_size}
masks: {source: model}
region_model:
  device: $device
  amp: true
  input_size: $input_size
  frontend: {depth: $depth, output_stride: 8}
  stage1: {iterations: $steps, batch_size: 2, checkpoint_every: $steps}
  stage2: {iterations: $steps, batch_size: 2, checkpoint_every: $steps}
cluster: {videos_per_job: 5}
EOF

start=$(date +%s)
# --resources gpu=1: one GPU job at a time, so each stage's time is its own
"$python" -m snakemake --snakefile "$repo/Snakefile" --directory "$work" \
    --configfile "$work/gpu_check.yaml" --workflow-profile none --cores "$(nproc)" \
    --resources gpu=1 --scheduler greedy --keep-incomplete --show-failed-logs \
    results/tables/timing.md
echo "# snakemake wall time: $(( $(date +%s) - start )) s"
cat "$work/results/tables/timing.md"
