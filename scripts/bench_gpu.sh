#!/usr/bin/env bash
# Re-measure the GPU tables of docs/performance.md: segpets.bench for both models at 256 px,
# batch 16, bf16-mixed training with channels_last, then the same with torch.compile.
# Usage: scripts/bench_gpu.sh OUT_DIR DATA_ROOT   (run from the repo root on a CUDA machine;
# PYTHON picks the interpreter, default python3). Each bench has its own time limit, so one
# that hangs (or compiles for too long) cannot take the others' results with it.
set -uo pipefail
OUT=$(realpath -m "${1:?OUT_DIR}")
DATA=$(realpath "${2:?DATA_ROOT}")
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export SEGPETS_CACHE_DIR=${SEGPETS_CACHE_DIR:-$OUT/cache}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
$PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"

COMMON=(data.root="$DATA" data.image_size=256 batch_size=16 precision=bf16-mixed
  module.channels_last=true warmup=5 steps=20 repeats=3 data_bench.batches=10)
bench() {  # bench LIMIT_S NAME OVERRIDES...
  local limit=$1 name=$2; shift 2
  echo "## $name — $(date -u '+%H:%M:%S') UTC"
  timeout "$limit" $PY -m segpets.bench "${COMMON[@]}" "$@" hydra.run.dir="$OUT/$name" \
    || echo "!! $name failed or timed out (exit $?)"
}
for model in unet res34_unet; do
  bench 150 "$model" model=$model peak.n=8192 peak.dtypes=[fp32,bf16] \
    'data_bench.workers=[0,4,8]'
done
for model in unet res34_unet; do  # training and inference both compiled (module.compile)
  bench 180 "${model}_compile" model=$model module.compile=true peak.n=8192 peak.dtypes=[bf16] \
    'inference.channels_last=[true]' 'inference.precisions=[bf16]' 'data_bench.workers=[]'
done
echo "## done — $(date -u '+%H:%M:%S') UTC"
