#!/usr/bin/env bash
# Make the folders of one model: repo/<model>/data/{all,training,test,classification,unlabelled}.
# Usage: ./create_dirs.sh <model>. Idempotent; never deletes. Needs no virtualenv.
# OPSSAT_REPO overrides the repo/ folder beside this script, as in opssat/core/paths.py.
set -euo pipefail
# Match bytes, not characters, whatever the user's locale.
export LC_ALL=C

fail() {
    echo "error: $1" >&2
    exit 2
}

[ "$#" -eq 1 ] || fail "usage: ./create_dirs.sh <model> (one model name, e.g. ./create_dirs.sh opssat_v1)"
name=$1

# The same rule as opssat.core.paths.check_model_name; the tests check that both agree:
# ASCII letters, digits, '_' and '-' (bytes, whatever the locale), not starting with '-',
# at most 100 characters.
if ! [[ $name =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$ ]]; then
    shown=${name//$'\n'/\\n}
    shown=${shown//$'\r'/\\r}
    fail "invalid model name '$shown': use ASCII letters, digits, '_' or '-', not starting with '-', at most 100 characters"
fi

repo=${OPSSAT_REPO:-"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/repo"}
model="$repo/$name"
for sub in all training test classification unlabelled; do
    if [ -e "$model/data/$sub" ] && [ ! -d "$model/data/$sub" ]; then
        fail "$model/data/$sub exists and is not a folder: move it away, then run again"
    fi
    # mkdir's own message would come before ours: keep only its reason.
    why=$(mkdir -p -- "$model/data/$sub" 2>&1) \
        || fail "cannot create $model/data/$sub (${why##*: }): check the permissions and that each part of the path is a folder"
done

echo "model folder: $model"
echo "put your images in $model/data/all/<label>/ (one folder per label, e.g. bad/, earth/, edge/)"
echo "unlabelled thumbnails go in $model/data/unlabelled/ (suggest_labels.py ranks them once a model exists)"
echo "then run: ./split_data.py '$name' 20"
