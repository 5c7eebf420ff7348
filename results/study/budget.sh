#!/bin/bash
# Budget curves (issue 28 item 2): one process per method, niced, one torch thread; the mid lr first.
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
COMMON="task=glue/sst2 data_root=../shared/data logger=none trainer.max_steps=480 task.max_train_samples=7680 task.max_eval_samples=null trainer.eval_strategy=steps trainer.eval_steps=60 trainer.save_steps=100000 trainer.progress_bar=false"
SUB='hydra.sweep.subdir=lr_${optimizer.lr}_seed_${seed}'
case $1 in
lora) nice -n 10 python run.py -m experiment=cpu_study_lora $COMMON optimizer.lr=0.004 seed=0,1 hydra.sweep.dir=runs/study/budget/lora "$SUB"
      nice -n 10 python run.py -m experiment=cpu_study_lora $COMMON optimizer.lr=0.016,0.001 seed=0 hydra.sweep.dir=runs/study/budget/lora "$SUB" ;;
unilora) nice -n 10 python run.py -m experiment=cpu_study_unilora $COMMON optimizer.lr=0.05,0.2,0.0125 seed=0 hydra.sweep.dir=runs/study/budget/unilora "$SUB" ;;
esac
