#!/usr/bin/env bash
# GPU figures in under 10 minutes on one CUDA GPU, unattended, without internet.
#
#   bash benchmarks/gpu.sh [OUTPUT]            # default OUTPUT: gpu-results (in the repo root)
#
# Assumes: run from anywhere inside the repo; `python` on PATH (or $PYTHON) has torch with
# CUDA, timm and safetensors; tmix_aug is importable from it, or the repo is installed with
# `pip install -e . --no-deps` below (no download: --no-deps, --no-build-isolation).
# Optional: CIFAR-10 as JPEG image folders for the short comparison, from $CIFAR_DIR (with
# train/ and test/) or the tarball $CIFAR_TGZ (default shared/data/cifar10-jpg.tar.gz in the
# repo); without either, that part is skipped and says so.
# Writes OUTPUT/gpu.jsonl (one JSON object per figure, each with the device name) and OUTPUT/gpu.md.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${1:-gpu-results}
mkdir -p "$OUT"
start=$(date +%s)
log() { echo "[gpu.sh $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/gpu.md"; }

if ! "$PYTHON" -c "import tmix_aug" 2>/dev/null; then
    log "installing the repo: pip install -e . --no-deps"
    "$PYTHON" -m pip install -q -e . --no-deps --no-build-isolation || { log "install failed"; exit 1; }
fi
"$PYTHON" - <<'EOF' | tee -a "$OUT/gpu.md"
import torch, timm
print(f"torch {torch.__version__}, timm {timm.__version__}, CUDA available: {torch.cuda.is_available()}, "
      f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
EOF
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { log "no CUDA device; stopping"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/gpu.md" 2>/dev/null

# 1. mixing time and ResNet-50 steps (a few minutes at most)
timeout 270 "$PYTHON" benchmarks/gpu_bench.py speed --output "$OUT" || log "speed part stopped (exit $?)"

# 2. short CIFAR-10 comparison with what is left of 9.5 minutes
left=$(( 570 - ($(date +%s) - start) ))
data=${CIFAR_DIR:-}
if [ -z "$data" ]; then
    tgz=${CIFAR_TGZ:-shared/data/cifar10-jpg.tar.gz}
    if [ -f "$tgz" ]; then
        data=$(mktemp -d)/cifar
        mkdir -p "$data" && tar xzf "$tgz" -C "$data" && log "extracted $tgz"
    fi
fi
if [ -z "$data" ] || [ ! -d "$data/train" ]; then
    log "CIFAR-10 comparison skipped: no CIFAR_DIR or CIFAR_TGZ image folders"
elif [ "$left" -lt 90 ]; then
    log "CIFAR-10 comparison skipped: only $left s left"
else
    timeout "$left" "$PYTHON" benchmarks/gpu_bench.py cifar --data-dir "$data" --epochs "${CIFAR_EPOCHS:-5}" \
        --budget-s $(( left - 30 )) --output "$OUT" || log "CIFAR part stopped (exit $?)"
fi
log "done in $(( $(date +%s) - start )) s; figures in $OUT/gpu.jsonl and $OUT/gpu.md"
