#!/usr/bin/env bash
# TensorBoard over every run under outputs/ (or the folder given): SCALARS (losses, Dice, lr),
# IMAGES (val/predictions panel) and HPARAMS (a sweep's runs side by side).
#   scripts/tensorboard.sh [logdir] [extra tensorboard flags]
#   e.g. scripts/tensorboard.sh outputs/train/multiruns/<time> --bind_all   # on a remote box
set -euo pipefail
LOGDIR="${1:-outputs}"; shift || true
exec "${TENSORBOARD:-tensorboard}" --logdir "$LOGDIR" --port "${PORT:-6006}" "$@"
