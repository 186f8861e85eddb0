#!/usr/bin/env bash
# Dubai aerial segmentation (Humans in the Loop / MBRSC, CC0): a U-Net from colour-coded masks.
# Trains on tiles 1-6, validates on tile 7 (best epoch by validation mean IoU), ~20 minutes on a
# 2-core CPU. Usage: bash examples/dubai-segmentation/train.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DATA=${1:-${HERE}/../../../shared/data/segmentation/dubai-aerial}
OUT=${2:-runs/dubai}
COLORS=${HERE}/colors.json   # the masks' colours (the set's classes.json lists other colours)

# 256 px chips of every image/mask pair; all of tiles 1-6 train, all of tile 7 validates.
geoclass -q tile "${DATA}"/tile{1,2,3,4,5,6} --task segment --label-colors "${COLORS}" \
    --size 256 --val-fraction 0 -o "${OUT}/chips-train" --overwrite
geoclass -q tile "${DATA}/tile7" --task segment --label-colors "${COLORS}" \
    --size 256 --val-fraction 0 -o "${OUT}/chips-val" --overwrite

# U-Net with a quarter-resolution stem (4.4 M parameters, ~15 chips/s on 2 cores): square-root
# class weights over pixels, Dice term, light label smoothing, flips/rotations/warps (image and
# mask together) and radiometric jitter.
geoclass train "${OUT}/chips-train" --val "${OUT}/chips-val" --model unet-s4 -o "${OUT}/run" \
    --epochs 16 --batch-size 8 --lr 2e-3 --dice 0.5 --label-smoothing 0.05 -j 1 --seed 0 --overwrite

# The shipped copy: fp16 weights (half the size; loaded back into fp32).
python -m geoclass.models.model_file half "${OUT}/run/model.safetensors" "${OUT}/model.safetensors"
