#!/usr/bin/env bash
# Every CPU benchmark in one command, then results/benchmarks.md rebuilt from what they wrote:
#
#   bash benchmarks/cpu.sh
#
#   1. train step, SmolLM2-135M shape, all 30 layers: 2 × 64 and 1 × 16 training steps, 1-token decode,
#      bare base and peak memory (results/benchmarks/train_step.json)
#   2. the same at 4 layers (--quick; the acceptance run of the performance issue, with the Gaussian paper
#      setting given 300 s for its first step): results/benchmarks/quick/
#   3. inference: merged vs base vs unmerged (forward + greedy generation)
#   4. θ_D reconstruction alone on the Llama-2-7B all-linear layout, r = 4 (D = 9,994,240)
#   5. serving k = 4 adapters in one mixed batch vs sequential batches (8 layers)
# One torch thread each, run one after the other: run it on a quiet machine (the report records the load
# average); ~35 min on an idle 2-core machine. Each step has its own time limit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
. benchmarks/steps.sh
run 1500 python -m benchmarks.train_step
run 1500 python -m benchmarks.train_step --quick
run 600 python -m benchmarks.inference
run 600 python -m benchmarks.reconstruct
run 600 python -m benchmarks.serving --layers 8 --repeats 3 --warmup 1
python -m benchmarks.report results/benchmarks results/benchmarks.md
exit $status
