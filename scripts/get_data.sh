#!/usr/bin/env bash
# Put Oxford-IIIT Pet where segpets looks by default (data/oxford-iiit-pet):
#   scripts/get_data.sh                      # download with torchvision (~800 MB, needs internet)
#   scripts/get_data.sh /datasets/oxford-iiit-pet   # link an existing copy instead
# A copy elsewhere also works without this script: python -m segpets.train data.root=/path
set -euo pipefail
PYTHON="${PYTHON:-python}"
TARGET="data/oxford-iiit-pet"

if [[ $# -ge 1 ]]; then
    SRC="$(cd "$1" && pwd)"
    for need in images annotations/trainval.txt annotations/test.txt annotations/trimaps; do
        [[ -e "$SRC/$need" ]] || { echo "get_data: error: '$SRC/$need' is missing" >&2; exit 2; }
    done
    [[ -e "$TARGET" ]] && { echo "get_data: error: '$TARGET' exists; not replacing it" >&2; exit 2; }
    mkdir -p data && ln -s "$SRC" "$TARGET"
    echo "linked $TARGET -> $SRC"
else
    # torchvision writes <root>/oxford-iiit-pet and verifies the archives' checksums
    "$PYTHON" -c "from torchvision.datasets import OxfordIIITPet as P; \
P('data', target_types='segmentation', download=True)"
    echo "downloaded to $TARGET"
fi
echo "$(wc -l < "$TARGET/annotations/trainval.txt") trainval / $(wc -l < "$TARGET/annotations/test.txt") test lines"
