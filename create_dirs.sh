#!/usr/bin/env bash
# Make the folders of one model: repo/<model>/data/{all,training,test,classification}.
# Usage: ./create_dirs.sh <model>. Idempotent; never deletes. Needs no virtualenv.
# OPSSAT_REPO overrides the repo/ folder beside this script, as in opssat/paths.py.
set -euo pipefail
# Match bytes, not characters, whatever the user's locale.
export LC_ALL=C

fail() {
    echo "error: $1" >&2
    exit 2
}

[ "$#" -eq 1 ] || fail "usage: ./create_dirs.sh <model> (one model name, e.g. ./create_dirs.sh opssat_v1)"
name=$1

# What Python's \s matches: ASCII whitespace, \x1c-\x1f, and Unicode spaces (UTF-8).
spaces=$' \t\n\v\f\r\x1c\x1d\x1e\x1f'
unicode_spaces=($'\xc2\x85' $'\xc2\xa0' $'\xe1\x9a\x80' $'\xe2\x80\x80' $'\xe2\x80\x81'
    $'\xe2\x80\x82' $'\xe2\x80\x83' $'\xe2\x80\x84' $'\xe2\x80\x85' $'\xe2\x80\x86'
    $'\xe2\x80\x87' $'\xe2\x80\x88' $'\xe2\x80\x89' $'\xe2\x80\x8a' $'\xe2\x80\xa8'
    $'\xe2\x80\xa9' $'\xe2\x80\xaf' $'\xe2\x81\x9f' $'\xe3\x80\x80')

# The same rule as opssat.paths.check_model_name; the tests check that both agree.
bad_name() {
    [ -z "$1" ] || [[ $1 == [-.]* ]] || [[ $1 == */* ]] || [[ $1 == *..* ]] ||
        [[ $1 == *["$spaces"]* ]] && return 0
    local space
    for space in "${unicode_spaces[@]}"; do
        [[ $1 == *"$space"* ]] && return 0
    done
    return 1
}

if bad_name "$name"; then
    shown=${name//$'\n'/\\n}
    shown=${shown//$'\r'/\\r}
    fail "invalid model name '$shown': use letters, digits, '_' or '-', not starting with '-' or '.', without '/', spaces or '..'"
fi

repo=${OPSSAT_REPO:-"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/repo"}
model="$repo/$name"
for sub in all training test classification; do
    if [ -e "$model/data/$sub" ] && [ ! -d "$model/data/$sub" ]; then
        fail "$model/data/$sub exists and is not a folder: move it away, then run again"
    fi
    mkdir -p -- "$model/data/$sub" || fail "cannot create $model/data/$sub: check the permissions"
done

echo "model folder: $model"
echo "put your images in $model/data/all/<label>/ (one folder per label, e.g. bad/, earth/, edge/)"
echo "then run: ./split_data.py $name 20"
