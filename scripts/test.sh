#!/usr/bin/env bash
# Builds everything and runs the whole test suite (GoogleTest through CTest).
# Tests that read ../shared (HF fixtures, vocab, data) skip with a message when it is absent.
# Then, unless BERT_SKIP_EMULATED=1, builds the CUDA device's engine code against the CPU emulation
# of its kernels (build-emu, -DBERT_CUDA=EMULATE; kernels/cuda_emu/README.md) and runs the engine-level
# CUDA tests there: without a GPU they are the only run the CUDA forward and trainer get.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
bash scripts/setup.sh
cmake --build "$BUILD_DIR" -j "$(nproc)"
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$(nproc)" "$@")

if [ "${BERT_SKIP_EMULATED:-0}" != 1 ]; then
  EMU_DIR=${EMU_BUILD_DIR:-build-emu}
  cmake -S . -B "$EMU_DIR" -DCMAKE_BUILD_TYPE=Release -DBERT_CUDA=EMULATE -DBERT_BUILD_BENCH=OFF >/dev/null
  cmake --build "$EMU_DIR" -j "$(nproc)" --target bert_run bert_train convert_weights cuda_engine_test \
    cuda_trainer_test grad_parity_test
  # One test at a time: each already uses every core (OpenMP), and two at once oversubscribe them (3x slower).
  (cd "$EMU_DIR" && ctest --output-on-failure -j 1 -R 'Cuda|GradParity.*_cuda$' "$@")
fi
