#!/usr/bin/env bash
# Train repo/<model>/'s classifier: ./train.sh <model> [epochs] [make_image_classifier flags]
#
# As the original toolkit: MobileNetV2 from TF Hub (the trainer's default --tfhub_module),
# fine-tuned (batch norm kept in inference mode), image size 224. Outputs go to
# repo/<model>/ (saved_model/, labels.txt, tflite_model.tflite, summaries/, train_record.json)
# and replace the previous ones only when training succeeded. Later flags override these.
set -euo pipefail
# A relative OPSSAT_REPO means from where the user ran this, not from the project folder.
case ${OPSSAT_REPO:-} in /*|"") ;; *) export OPSSAT_REPO="$PWD/$OPSSAT_REPO" ;; esac
cd "$(dirname "$0")"
python=.venv/bin/python
[ -x "$python" ] || python=python3
usage="usage: ./train.sh <model> [epochs] [make_image_classifier flags]"
if [ $# -lt 1 ]; then
    echo "$usage" >&2
    exit 2
fi
if [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    # The trainer's own help: every flag, built without importing TensorFlow.
    echo "$usage"
    echo "(gives --model <model> --image_size 224 --do_fine_tuning [--train_epochs <epochs>]; later flags win)"
    echo
    exec "$python" -m opssat.train.make_image_classifier --help
fi
model=$1
shift
epochs=()
# The second argument is the epochs unless it is a --flag: a positive whole number.
if [ $# -gt 0 ] && [[ $1 != --* ]]; then
    if ! [[ $1 =~ ^[0-9]{1,6}$ ]] || [ "$((10#$1))" -eq 0 ]; then
        echo "error: epochs must be a whole number from 1 to 999999, not '$1' (usage: ./train.sh <model> [epochs] [make_image_classifier flags])" >&2
        exit 2
    fi
    epochs=(--train_epochs "$((10#$1))")
    shift
fi
exec "$python" -m opssat.train.make_image_classifier --model "$model" \
    --image_size 224 --do_fine_tuning "${epochs[@]}" "$@"
