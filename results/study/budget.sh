#!/bin/bash
# Budget curves (issue 28 item 2): one process per method, niced, one torch thread; the mid lr first.
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
COMMON="data_root=../shared/data logger=none trainer.max_steps=480 task.max_eval_samples=null trainer.eval_strategy=steps trainer.eval_steps=60 trainer.save_steps=100000 trainer.progress_bar=false"
SST2="task=glue/sst2 task.max_train_samples=7680"
# STS-B: the whole train split (5,749 pairs; 480 steps of 16 see it 1.3 times), at the lr the study's search chose.
STSB="task=glue/stsb task.max_train_samples=null"
SUB='hydra.sweep.subdir=lr_${optimizer.lr}_seed_${seed}'
case $1 in
lora) nice -n 10 python run.py -m experiment=cpu_study_lora $COMMON $SST2 optimizer.lr=0.004 seed=0,1 hydra.sweep.dir=runs/study/budget/lora "$SUB"
      nice -n 10 python run.py -m experiment=cpu_study_lora $COMMON $SST2 optimizer.lr=0.016,0.001 seed=0 hydra.sweep.dir=runs/study/budget/lora "$SUB" ;;
unilora) nice -n 10 python run.py -m experiment=cpu_study_unilora $COMMON $SST2 optimizer.lr=0.05,0.2,0.0125 seed=0 hydra.sweep.dir=runs/study/budget/unilora "$SUB" ;;
stsb-lora) nice -n 10 python run.py -m experiment=cpu_study_lora $COMMON $STSB optimizer.lr=0.00207179 seed=0,1,2 hydra.sweep.dir=runs/study/budget/stsb_lora "$SUB" ;;
stsb-unilora) nice -n 10 python run.py -m experiment=cpu_study_unilora $COMMON $STSB "optimizer.lr=$2" seed=0,1,2 hydra.sweep.dir=runs/study/budget/stsb_unilora "$SUB" ;;
esac
