#!/usr/bin/env bash
# Builds everything and runs the whole test suite (GoogleTest through CTest).
# Tests that read ../shared (HF fixtures, vocab, data) skip with a message when it is absent; GPU
# tests skip with a message without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
bash scripts/setup.sh
cmake --build "$BUILD_DIR" -j "$(nproc)"
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$(nproc)" "$@")

