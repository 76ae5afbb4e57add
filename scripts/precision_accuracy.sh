#!/usr/bin/env bash
# SST-2 dev accuracy of one classifier the engine trained, run in fp32, bf16 and int8 on the CPU
# (docs/PRECISION.md): trains the bert-mini recipe of docs/TRAINING.md (scaled by the knobs below), then
# classifies the 872 dev sentences with bert_run --text-file in each precision and prints accuracy, the
# loss of accuracy against fp32 and how many predictions changed. bf16 is skipped (with the engine's
# reason) on CPUs without a bf16 matmul.
#   scripts/precision_accuracy.sh [BUILD_DIR] [OUT_DIR]
#   knobs: SHAPE (bert-mini), EPOCHS (3), LIMIT_TRAIN (0 = all 67,349), THREADS (2), MODEL (skip training:
#          an engine file to evaluate)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OUT=${2:-bench/results/$(date -u +%F)-precision-accuracy}
SHARED=${BERT_SHARED_DIR:-../shared}
DATA=$SHARED/data/glue-sst2
[ -f "$DATA/dev.tsv" ] || { echo "precision_accuracy: $DATA/dev.tsv not found (../shared)" >&2; exit 77; }
mkdir -p "$OUT"
MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
  MODEL=$OUT/sst2-${SHAPE:-bert-mini}.bert
  limit=()
  [ "${LIMIT_TRAIN:-0}" != 0 ] && limit=(--limit-train "$LIMIT_TRAIN")
  "$BUILD/tools/bert_train" --synthetic "${SHAPE:-bert-mini}" --architecture BertForSequenceClassification \
    --vocab "$SHARED/models/bert-base-uncased-tokenizer/vocab.txt" --train "$DATA/train.tsv" --dev "$DATA/dev.tsv" \
    --epochs "${EPOCHS:-3}" --batch 32 --lr 5e-4 --warmup 0.1 --weight-decay 0.01 --max-seq 128 \
    --threads "${THREADS:-2}" --seed 42 "${limit[@]}" --out "$MODEL" --log "$OUT/train.jsonl" > "$OUT/train.log" 2>&1
fi
tail -n +2 "$DATA/dev.tsv" | cut -f1 > "$OUT/dev_sentences.txt"
tail -n +2 "$DATA/dev.tsv" | cut -f2 > "$OUT/dev_labels.txt"
for p in fp32 bf16 int8; do
  if ! "$BUILD/tools/bert_run" --model "$MODEL" --text-file "$OUT/dev_sentences.txt" --precision "$p" \
       --threads "${THREADS:-2}" > "$OUT/pred_$p.jsonl" 2> "$OUT/pred_$p.err"; then
    echo "$p: not run: $(tail -1 "$OUT/pred_$p.err")" >&2
    rm -f "$OUT/pred_$p.jsonl"
  fi
done
python3 - "$OUT" "$(grep -o 'avx512[a-z_0-9]*\|avx2' /proc/cpuinfo | sort -u | paste -sd' ')" <<'PY'
import json, os, sys
out, flags = sys.argv[1], sys.argv[2]
labels = [int(l) for l in open(os.path.join(out, "dev_labels.txt"))]
def preds(p):
    path = os.path.join(out, f"pred_{p}.jsonl")
    return [json.loads(l)["label_id"] for l in open(path)] if os.path.exists(path) else None
base = preds("fp32")
rows = ["| precision | dev accuracy | vs fp32 (points) | predictions changed |", "| --- | --- | --- | --- |"]
for p in ("fp32", "bf16", "int8"):
    got = preds(p)
    if got is None:
        rows.append(f"| {p} | not run (see pred_{p}.err) | | |"); continue
    acc = 100.0 * sum(a == b for a, b in zip(got, labels)) / len(labels)
    base_acc = 100.0 * sum(a == b for a, b in zip(base, labels)) / len(labels)
    changed = sum(a != b for a, b in zip(got, base))
    rows.append(f"| {p} | {acc:.2f}% | {acc - base_acc:+.2f} | {changed} of {len(labels)} |")
table = "\n".join(rows)
open(os.path.join(out, "accuracy.md"), "w").write(f"CPU flags: {flags}\n\n{table}\n")
print(table)
PY
