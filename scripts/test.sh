#!/usr/bin/env bash
# Builds everything and runs the whole test suite (GoogleTest through CTest).
# Tests that read ../shared (HF fixtures, vocab, data) skip with a message when it is absent; GPU
# tests skip with a message without a GPU.
# Then the hardening stages (docs/HARDENING.md), each in its own build tree:
#   fuzz:     scripts/fuzz.sh $BERT_FUZZ_SECONDS (default 15 s per parser target; clang + ASan + UBSan)
#   sanitize: scripts/sanitize.sh (the input-path tests built with ASan + UBSan)
# BERT_FUZZ_SECONDS=0 or BERT_SANITIZE=0 skips a stage; a stage whose compiler is missing says so
# and is skipped. Arguments go to the main ctest run.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
bash scripts/setup.sh
cmake --build "$BUILD_DIR" -j "$(nproc)"
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$(nproc)" "$@")

stage() {  # name, command...: runs a stage and reports its wall time
  local name=$1 start=$SECONDS
  shift
  echo "== $name"
  "$@"
  echo "== $name: passed in $((SECONDS - start)) s"
}
if [ "${BERT_FUZZ_SECONDS:-15}" != 0 ]; then
  if command -v clang++ >/dev/null; then
    stage "fuzz (${BERT_FUZZ_SECONDS:-15} s per target)" bash scripts/fuzz.sh "${BERT_FUZZ_SECONDS:-15}"
  else
    echo "== fuzz: skipped (no clang++; apt-get install clang libclang-rt-dev)"
  fi
fi
if [ "${BERT_SANITIZE:-1}" != 0 ]; then
  stage "sanitize (ASan + UBSan)" bash scripts/sanitize.sh
fi
