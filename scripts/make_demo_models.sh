#!/usr/bin/env bash
# Makes the demo page's models with the engine itself (there are no pre-trained weights on this
# machine and nothing is downloaded): bert-tiny and bert-mini shaped SST-2 classifiers fine-tuned
# from seeded random weights by tools/bert_train, and an untrained bert-base shaped classifier that
# is only the speed reference of the page's "speed-up over bert-base" (its predictions are chance).
#
#   scripts/make_demo_models.sh [OUT_DIR (models/demo)]
#   env: BUILD_DIR (build), BERT_SHARED_DIR (../shared), THREADS (2), TINY_EPOCHS (2),
#        MINI_EPOCHS (1), MINI_LIMIT (20000 training sentences), SKIP_BASE=1 (no bert-base)
# Then: build/tools/bert_serve --model-dir OUT_DIR --model bert-tiny=OUT_DIR/sst2-bert-tiny.bert ...
#       (scripts/serve_demo.sh does exactly that).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
OUT=${1:-models/demo}
SHARED=${BERT_SHARED_DIR:-../shared}
THREADS=${THREADS:-2}
VOCAB=$SHARED/models/bert-base-uncased-tokenizer/vocab.txt
DATA=$SHARED/data/glue-sst2
for f in "$VOCAB" "$DATA/train.tsv" "$DATA/dev.tsv"; do
  [ -f "$f" ] || { echo "make_demo_models: $f is missing (set BERT_SHARED_DIR)" >&2; exit 1; }
done
for t in bert_train convert_weights; do
  [ -x "$BUILD/tools/$t" ] || cmake --build "$BUILD" -j2 --target "$t"
done
mkdir -p "$OUT"

train() {  # shape epochs limit lr
  local shape=$1 epochs=$2 limit=$3 lr=$4 extra=()
  [ "$limit" = all ] || extra=(--limit-train "$limit")
  echo "make_demo_models: fine-tuning $shape on SST-2 ($epochs epoch(s), $limit sentences)"
  "$BUILD/tools/bert_train" --synthetic "$shape" --architecture BertForSequenceClassification \
    --vocab "$VOCAB" --train "$DATA/train.tsv" --dev "$DATA/dev.tsv" \
    --epochs "$epochs" --batch 32 --lr "$lr" --warmup 0.1 --weight-decay 0.01 --max-seq 64 \
    --threads "$THREADS" --seed 42 "${extra[@]}" \
    --out "$OUT/sst2-$shape.bert" --log "$OUT/sst2-$shape.train.jsonl"
}
train bert-tiny "${TINY_EPOCHS:-2}" all 1e-3
train bert-mini "${MINI_EPOCHS:-1}" "${MINI_LIMIT:-20000}" 5e-4
if [ "${SKIP_BASE:-0}" != 1 ]; then
  echo "make_demo_models: bert-base shaped classifier (seeded random weights: the speed reference only)"
  "$BUILD/tools/convert_weights" --synthetic bert-base --architecture BertForSequenceClassification \
    "$OUT/bert-base-untrained.bert" --vocab "$VOCAB"
fi
echo "make_demo_models: models in $OUT:"
ls -l "$OUT"/*.bert
