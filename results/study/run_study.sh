#!/bin/bash
# The study of results/study/README.md: SST-2 with every method (5 seeds), then STS-B with 4 methods and 3 seeds
# (cut to fit ~8 CPU-hours: seeds first, then methods; STS_METHODS=<list> extends it). STS-B runs at SST-2's
# measured budget; its own plateau, measured afterwards, is later (≈ 300 steps, budget.md "STS-B").
# One process, niced, one torch thread. Rerunning it resumes: finished rung and seed runs are reused, an
# interrupted run continues from its last checkpoint (trainer.save_steps).
# METHODS / STS_METHODS split the work across cores: each method writes only its own dirs, so two copies
# with disjoint lists run side by side.
# Run from the repository root; BUDGET (steps) is the measured budget of results/study/budget.md. Another BUDGET
# is another experiment: give it another OUT (finished runs of one budget never count for another), e.g.
#   BUDGET=320 OUT=results/study/runs_320 METHODS= bash results/study/run_study.sh   # STS-B only, at 320 steps
# (an empty METHODS or STS_METHODS skips that task).
set -e
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
BUDGET=${BUDGET:-240}
OUT=${OUT:-results/study/runs}
METHODS=${METHODS-lora,unilora,vera,tied,vblora,prolora,loraxs,tinylora,randlora,nola,fastfood,gaussian}
STS_METHODS=${STS_METHODS-lora,unilora,vera,tied}
COMMON=(--search halving --budget "$BUDGET" --rungs 3 --eta 2 --trials 8 --max-widen 2 --holdout 200
        --eval-every $((BUDGET / 4)) --experiment-prefix cpu_study_ --out "$OUT"
        data_root=../shared/data logger=none task.max_train_samples=$((BUDGET * 16)) task.max_eval_samples=null
        trainer.save_steps=$((BUDGET / 4)) trainer.progress_bar=false)
if [ -n "$METHODS" ]; then
    nice -n 10 python -m lorazoo.study.fair --task glue/sst2 --projections "$METHODS" --seeds 0,1,2,3,4 "${COMMON[@]}"
fi
if [ -n "$STS_METHODS" ]; then
    nice -n 10 python -m lorazoo.study.fair --task glue/stsb --projections "$STS_METHODS" --seeds 0,1,2 "${COMMON[@]}"
fi
