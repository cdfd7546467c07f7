#!/usr/bin/env bash
# Re-measure the CPU tables of docs/performance.md on an idle CPU machine (~16 minutes on 2 cores):
#   1. segpets.bench for the cpu_fast model (UNet width 16 + BatchNorm, channels_last, 64 px,
#      batch 8, as it trains)
#   2. segpets.bench for the seed UNet (width 64) at 256 px, batch 2
#   3. experiment=cpu_fast trained on the mini set, then its tested checkpoint evaluated with
#      hflip TTA at full resolution (segpets.eval), timed together, and the Dice-vs-minutes curve
# Usage: scripts/bench_cpu.sh [OUT_DIR] [MINI_ROOT]   (run from the repo root)
set -euo pipefail
OUT=$(realpath -m "${1:-/tmp/segpets-bench-$(date -u +%Y%m%d-%H%M%S)}")
MINI=$(realpath "${2:-../shared/data/oxford-pet-mini}")
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
exec > >(tee "$OUT/bench_cpu.log") 2>&1

machine() {
  echo "## $1 — $(date -u '+%Y-%m-%d %H:%M:%S') UTC, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
}
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores, git $(git rev-parse --short HEAD)"
QUIET="callbacks.progress_bar.refresh_rate=0"

machine "bench: cpu_fast model"
SEGPETS_CACHE_DIR="$OUT/cache-bench" $PY -m segpets.bench data.root="$MINI" \
  model.width=16 model.batch_norm=true module.channels_last=true data.image_size=64 batch_size=8 \
  hydra.run.dir="$OUT/bench_cpu_fast"

machine "bench: seed UNet at 256 px"
SEGPETS_CACHE_DIR="$OUT/cache-bench" $PY -m segpets.bench data.root="$MINI" \
  model.width=64 data.image_size=256 batch_size=2 warmup=1 steps=2 repeats=5 \
  data_bench.batches=8 inference.precisions=[fp32] hydra.run.dir="$OUT/bench_unet256"

machine "train: experiment=cpu_fast (fresh cache: its build counts in the wall time)"
start=$(date +%s)
SEGPETS_CACHE_DIR="$OUT/cache-train" $PY -m segpets.train experiment=cpu_fast \
  data.root="$MINI" $QUIET hydra.run.dir="$OUT/cpu_fast"
echo "cpu_fast train wall time: $(( $(date +%s) - start )) s (start-up, cache build, fit, test)"
CKPT=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['ckpt_path'])" \
  "$OUT/cpu_fast/test_metrics.json")
SEGPETS_CACHE_DIR="$OUT/cache-train" $PY -m segpets.eval ckpt_path="$CKPT" data.root="$MINI" \
  eval.tta=hflip eval.full_res=true progress_bar=false hydra.run.dir="$OUT/cpu_fast_eval"
echo "cpu_fast wall time: $(( $(date +%s) - start )) s (train as above + segpets.eval hflip TTA)"
machine "done"
$PY scripts/dice_curve.py "$OUT/cpu_fast" --csv "$OUT/cpu_fast_curve.csv"
echo "outputs: $OUT"
