#!/usr/bin/env bash
# Builds the engine and runs the main job: bench/bert_bench (CPU inference on bert-base and
# bert-tiny shapes with seeded synthetic weights, plus model load time). Extra arguments go to
# bert_bench, e.g. --model model.bert or --benchmark_filter='BM_Inference/model:0/batch:1/seq:128'.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
bash scripts/setup.sh
cmake --build "$BUILD_DIR" -j "$(nproc)" --target bert_bench convert_weights bert_run bert_tokenize
exec "$BUILD_DIR/bench/bert_bench" "$@"
