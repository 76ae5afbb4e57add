#!/usr/bin/env bash
# Installs the engine into a temporary prefix, builds examples/app against it with find_package,
# and runs the app on a synthetic bert-tiny model file.  Args: <source dir> <build dir>
set -euo pipefail
src=$1
build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/examples/app" -B "$work/app" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/app" -j 2 >/dev/null
"$work/prefix/bin/convert_weights" --synthetic bert-tiny --architecture BertForSequenceClassification "$work/tiny.bert"
out=$("$work/app/bert_example_app" "$work/tiny.bert")
echo "$out"
grep -q "^logits \[2, 2\]" <<<"$out"
grep -q "^pooler_output \[2, 128\]" <<<"$out"
