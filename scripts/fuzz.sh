#!/usr/bin/env bash
# Full-count loader fuzz: mutated real images and trimaps from the mini dataset through the
# loader; each must load or raise segpets' DataError, none may crash or hang (10 s per example).
#   scripts/fuzz.sh [EXAMPLES]      (default 10000; CI runs a derandomized 200)
set -euo pipefail
cd "$(dirname "$0")/.."
export SEGPETS_FUZZ_EXAMPLES="${1:-10000}"
exec "${PYTHON:-.venv/bin/python}" -m pytest tests/test_fuzz.py -q -s -p no:cacheprovider
