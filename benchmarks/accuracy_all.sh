#!/usr/bin/env bash
# Every accuracy cell of the two protocols in use (scratch-long, transfer-long), seed by seed, one cell at a time.
# (The 80-epoch "scratch" and 8-epoch "transfer" protocols underfit the mixers; their recorded cells stay in accuracy.jsonl.)
# Each (seed, protocol) group is a fresh process, so it reads the protocol as it is on disk then.
# Finished cells are skipped and unfinished ones resume, so rerunning this continues the studies:
#   nohup nice -n 10 env OMP_NUM_THREADS=1 bash benchmarks/accuracy_all.sh >> ~/.cache/tmix/accuracy/run.log 2>&1 &
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
for seed in 0 1 2; do
    for protocol in scratch-long transfer-long; do
        "$PYTHON" benchmarks/accuracy.py run --protocol "$protocol" --seed "$seed" --keep-going
    done
done
