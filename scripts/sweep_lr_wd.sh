#!/usr/bin/env bash
# The learning-rate × weight-decay grid (4 × 3 = 12 runs), then its summary table and plots.
#   scripts/sweep_lr_wd.sh [extra Hydra overrides...]
#   e.g. scripts/sweep_lr_wd.sh model=res34_unet data.root=/data/oxford-iiit-pet
#        scripts/sweep_lr_wd.sh experiment=quickstart hydra/launcher=joblib   # 2 at a time
# LRS / WDS replace the grids: LRS=1e-4,5e-4 WDS=0,1e-5 scripts/sweep_lr_wd.sh
set -euo pipefail
PYTHON="${PYTHON:-python}"
LRS="${LRS:-1e-4,3e-4,5e-4,1e-3}"
WDS="${WDS:-0,1e-5,3e-5}"
SWEEP="outputs/sweep_lr_wd/multiruns/$(date +%Y-%m-%d_%H-%M-%S)"

"$PYTHON" -m segpets.train -m "optimizer.lr=$LRS" "optimizer.weight_decay=$WDS" \
    "hydra.sweep.dir=$SWEEP" "$@"
"$PYTHON" -m segpets.summarize "$SWEEP"
