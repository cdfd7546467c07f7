#!/usr/bin/env bash
# Reproduce the seed lab's two runs (UNet, ResNet34-UNet; 256 px, its optimizer and schedule)
# as one multirun, then print their summary table.
#   scripts/reproduce_seed.sh [/path/to/oxford-iiit-pet] [extra Hydra overrides...]
#   e.g. scripts/reproduce_seed.sh /data/oxford-iiit-pet trainer=gpu data.num_workers=8
set -euo pipefail
DATA_ROOT="${1:-data/oxford-iiit-pet}"; shift || true
PYTHON="${PYTHON:-python}"
SWEEP="outputs/seed/multiruns/$(date +%Y-%m-%d_%H-%M-%S)"

"$PYTHON" -m segpets.train -m experiment=seed_unet,seed_res34 \
    "data.root=$DATA_ROOT" "hydra.sweep.dir=$SWEEP" "$@"
"$PYTHON" -m segpets.summarize "$SWEEP" --sort test_dice
