#!/bin/sh
# The recorded Tiny-ImageNet runs, one after the other (one background job), from the repository root:
#   nohup nice -n 10 env OMP_NUM_THREADS=1 sh benchmarks/tinyimagenet/run_teacher_then_judge.sh > ~/.cache/tmix/tinyimagenet_runs.log 2>&1 &
# Both steps resume from their work directories, so rerunning the same command continues
# where a stopped run left off (a finished teacher is not trained or evaluated again).
# PYTHON defaults to the repository's .venv.
set -e
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" benchmarks/tinyimagenet/finetune_teacher.py --steps 200 --save-every 10
mkdir -p benchmarks/results/tinyimagenet
cp ~/.cache/tmix/teachers/tf_mobilenetv2_100_up2_os16_tinyimagenet.safetensors benchmarks/results/tinyimagenet/
"$PYTHON" benchmarks/tinyimagenet/train_judge.py
