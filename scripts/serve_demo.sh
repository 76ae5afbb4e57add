#!/usr/bin/env bash
# Serves the demo page (study 002) with the models scripts/make_demo_models.sh made:
#   scripts/serve_demo.sh [PORT (8080)] [MODEL_DIR (models/demo)]   then open http://127.0.0.1:PORT/
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
PORT=${1:-8080}
DIR=${2:-models/demo}
SHARED=${BERT_SHARED_DIR:-../shared}
[ -x "$BUILD/tools/bert_serve" ] || cmake --build "$BUILD" -j2 --target bert_serve
args=()
for f in "$DIR"/sst2-*.bert "$DIR"/bert-base-untrained.bert; do
  [ -f "$f" ] || continue
  name=$(basename "$f" .bert)
  name=${name#sst2-}
  args+=(--model "$name=$f")
done
[ ${#args[@]} -gt 0 ] || { echo "serve_demo: no models in $DIR: run scripts/make_demo_models.sh first" >&2; exit 1; }
exec "$BUILD/tools/bert_serve" --port "$PORT" --model-dir "$DIR" "${args[@]}" \
  --demo-data "$SHARED/data/glue-sst2/dev.tsv"
