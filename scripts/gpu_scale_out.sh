#!/usr/bin/env bash
# GPU checks of issue 15 (NOT RUN YET: the session that wrote this had no GPU). Everything here passed on
# CPU/gloo in the test suite; this runs the GPU paths and writes figures to results/scale_out_gpu/.
#   bash scripts/gpu_scale_out.sh [out dir]      needs: bash scripts/install.sh, CUDA GPU(s), DATA=<dir with gsm8k/>
# 1. SmolLM2-135M (packaged) + Uni-LoRA on GSM8K, 1 GPU, bf16: torch.compile vs eager (loss, speed).
# 2. 1 GPU vs CPU sanity: the same 20 fp32 steps; losses should agree to ~1e-4.
# 3. With >= 2 GPUs: NCCL DDP on 2 GPUs vs 1 GPU at the same global batch; Trainer FSDP2; DeepSpeed ZeRO-2/3
#    when deepspeed is installed (pip install deepspeed).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/scale_out_gpu}"
data="${DATA:-../shared/data}"
ngpu=$(python -c "import torch; print(torch.cuda.device_count())")
[ "$ngpu" -ge 1 ] || { echo "no CUDA GPU visible" >&2; exit 1; }
common=(task=math/gsm8k "task.data_dir=$data/gsm8k" model=smollm2-135m projection=unilora logger=none
        trainer.eval_strategy=no task.max_eval_samples=64 task.max_new_tokens=64 trainer.save_steps=100000
        trainer.logging_steps=5 trainer.progress_bar=false seed=0)
run() { local dir="$1"; shift; [ -f "$out/$dir/metrics.json" ] || "$@" "hydra.run.dir=$out/$dir"; }

run smollm2_bf16_compile python run.py "${common[@]}" trainer.max_steps=200 trainer.batch_size=16 trainer.precision=bf16 trainer.torch_compile=true
run smollm2_bf16_eager python run.py "${common[@]}" trainer.max_steps=200 trainer.batch_size=16 trainer.precision=bf16
run gpu1_fp32_20 python run.py "${common[@]}" trainer.max_steps=20 trainer.batch_size=8
CUDA_VISIBLE_DEVICES="" run cpu_fp32_20 python run.py "${common[@]}" trainer.max_steps=20 trainer.batch_size=8 trainer.use_cpu=true
if [ "$ngpu" -ge 2 ]; then
  run ddp2_fp32_20 torchrun --standalone --nproc_per_node=2 run.py "${common[@]}" trainer.max_steps=20 trainer.batch_size=4
  run fsdp2_fp32_20 torchrun --standalone --nproc_per_node=2 run.py "${common[@]}" trainer.max_steps=20 trainer.batch_size=4 \
    trainer.fsdp="full_shard auto_wrap"
  if python -c "import deepspeed" 2>/dev/null; then
    for z in 2 3; do
      run "zero${z}_fp32_20" torchrun --standalone --nproc_per_node=2 run.py "${common[@]}" trainer.max_steps=20 \
        trainer.batch_size=4 "trainer.deepspeed=configs/deepspeed/zero${z}.json"
    done
  fi
fi
python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for m in sorted(out.glob("*/metrics.json")):
    r = json.loads(m.read_text())
    rows[m.parent.name] = {"status": r.get("status"), "world_size": r.get("world_size"), "train_loss": r.get("train", {}).get("train_loss"),
                           "eval_loss": r.get("metrics", {}).get("loss"), "exact_match": r.get("exact_match"),
                           "train_wall_s": r.get("train", {}).get("wall_time_s"), "command": r.get("command")}
ref = rows.get("gpu1_fp32_20", {}).get("train_loss")
for name, row in rows.items():
    if name.endswith("_fp32_20") and ref is not None and row["train_loss"] is not None:
        row["train_loss_minus_1gpu"] = row["train_loss"] - ref
eager, compiled = rows.get("smollm2_bf16_eager"), rows.get("smollm2_bf16_compile")
if eager and compiled and eager["train_wall_s"] and compiled["train_wall_s"]:
    rows["compile_speedup"] = {"eager_over_compiled_wall": eager["train_wall_s"] / compiled["train_wall_s"]}
(out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
print(json.dumps(rows, indent=2))
PY
