#!/usr/bin/env bash
# The GPU benchmarks, ready to run once on a CUDA machine (not run yet: no GPU was lent to issue 18's session).
#
#   bash benchmarks/gpu.sh [results/benchmarks/gpu]
#
# CUDA-synchronised timings (benchmarks/common.py: timed() synchronises before and after every call), base
# model in bf16, adapters fp32 (lorazoo keeps them fp32; PEFT's autocast_adapter_dtype does the same):
#   1. train step, SmolLM2-135M shape, all 30 layers (main / small / decode settings, bare base, memory)
#   2. train step, a 4-layer stack of Llama-2-7B decoder layers (4096 hidden, 11008 MLP, 32 heads), 4 × 512 tokens
#   3. θ_D reconstruction alone on the full Llama-2-7B all-linear layout, r = 4 (D = 9,994,240)
#   4. inference: merged vs base vs unmerged (forward + greedy generation), SmolLM2 shape
# then regenerates results/benchmarks.md, which gets a "GPU: <device name>" section from <out>/**.
# Each step has its own timeout so that one slow step cannot eat the others' time (~10 min in all on an H200).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/benchmarks/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("error: benchmarks/gpu.sh needs a CUDA device; torch.cuda.is_available() is False")
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" || true
GPU="--device cuda --dtype bfloat16 --threads 4"
. benchmarks/steps.sh
run 200 python -m benchmarks.train_step $GPU --steps 30 --warmup 5 --budget 20 --step-cap 60 --out "$OUT/smollm2-30l"
run 150 python -m benchmarks.train_step $GPU --model llama2-7b --layers 4 --batch 4 --seq 512 --small 1x16 \
    --steps 20 --warmup 3 --budget 15 --step-cap 60 --out "$OUT/llama2-7b-4l"
run 120 python -m benchmarks.reconstruct --device cuda --repeats 20 --warmup 2 --cap 30 --budget 10 --out "$OUT/reconstruct-7b"
run 90 python -m benchmarks.inference $GPU --repeats 20 --warmup 3 --out "$OUT/inference"
python -m benchmarks.report results/benchmarks results/benchmarks.md
exit $status
