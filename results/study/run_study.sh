#!/bin/bash
# The study of results/study/README.md: SST-2 with every method (5 seeds), then STS-B with 4 methods and 3 seeds
# (cut to fit ~8 CPU-hours: seeds first, then methods, never the step budget; STS_METHODS=<list> extends it).
# One process, niced, one torch thread. Rerunning it resumes: finished rung and seed runs are reused, an
# interrupted run continues from its last checkpoint (trainer.save_steps).
# METHODS / STS_METHODS split the work across cores: each method writes only its own dirs, so two copies
# with disjoint lists run side by side.
# Run from the repository root; BUDGET (steps) is the measured budget of results/study/budget.md.
set -e
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
BUDGET=${BUDGET:-240}
METHODS=${METHODS:-lora,unilora,vera,tied,vblora,prolora,loraxs,tinylora,randlora,nola,fastfood,gaussian}
STS_METHODS=${STS_METHODS:-lora,unilora,vera,tied}
COMMON=(--search halving --budget "$BUDGET" --rungs 3 --eta 2 --trials 8 --max-widen 2 --holdout 200
        --eval-every $((BUDGET / 4)) --experiment-prefix cpu_study_ --out results/study/runs
        data_root=../shared/data logger=none task.max_train_samples=$((BUDGET * 16)) task.max_eval_samples=null
        trainer.save_steps=$((BUDGET / 4)) trainer.progress_bar=false)
nice -n 10 python -m lorazoo.study.fair --task glue/sst2 --projections "$METHODS" --seeds 0,1,2,3,4 "${COMMON[@]}"
nice -n 10 python -m lorazoo.study.fair --task glue/stsb --projections "$STS_METHODS" --seeds 0,1,2 "${COMMON[@]}"
