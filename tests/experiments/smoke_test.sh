#!/usr/bin/env bash
# One study experiment in its smoke configuration (seconds): scripts/experiment.sh NAME --smoke into
# the build directory, then its table, rows and plots are checked (scripts/experiments/check_result.py).
#   smoke_test.sh SOURCE_DIR BUILD_DIR NAME MIN_ROWS      (exit 77 = skipped: no ../shared or matplotlib)
set -euo pipefail
SRC=$1 BUILD=$2 NAME=$3 MIN_ROWS=$4
SHARED=${BERT_SHARED_DIR:-$SRC/../shared}
if [ ! -f "$SHARED/data/glue-sst2/dev.tsv" ]; then
  echo "skipped: no $SHARED/data/glue-sst2 (set BERT_SHARED_DIR)"; exit 77
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import matplotlib" 2>/dev/null; then
  echo "skipped: no matplotlib (python3-matplotlib, scripts/setup.sh)"; exit 77
fi
OUT="$BUILD/experiments-smoke/$NAME"
rm -rf "$OUT"
BERT_EXP_PROGRESS=0 BERT_SHARED_DIR="$SHARED" "$SRC/scripts/experiment.sh" "$NAME" --smoke --no-build \
  --build-dir "$BUILD" --out "$OUT"
"$PY" "$SRC/scripts/experiments/check_result.py" "$OUT" "$MIN_ROWS"
