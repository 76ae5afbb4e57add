#!/usr/bin/env bash
# Builds the engine, its tools and a subset of the test suite with AddressSanitizer +
# UndefinedBehaviorSanitizer (gcc, -O0 unless SANITIZE_OPT says otherwise: it builds in half the time
# of -O1; -DBERT_CUDA=OFF, no benchmarks) in $SANITIZE_BUILD_DIR
# (default build-asan) and runs that subset one executable at a time. The subset is every test of the input
# paths: the readers and parsers, the tools end to end (their binaries are instrumented too) and the
# public API's error paths; the numeric kernels' parity and training suites are left out to fit
# the CI budget (docs/HARDENING.md). SANITIZE_TESTS="a_test b_test" picks others; extra arguments
# go to each test executable (e.g. --gtest_filter=...).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${SANITIZE_BUILD_DIR:-build-asan}
JOBS=${SANITIZE_BUILD_JOBS:-$(nproc)}
TESTS=${SANITIZE_TESTS:-"hardening_test cli_test friction_test safetensors_test torch_checkpoint_test tokenizer_test
  data_test postprocess_test public_api_test tools_test bert_tokenize_tool_test"}
FLAGS="${SANITIZE_OPT:--O0} -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=None -DBERT_CUDA=OFF -DBERT_BUILD_BENCH=OFF \
  -DCMAKE_CXX_FLAGS="$FLAGS" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
targets="bert_run bert_train bert_tokenize convert_weights"
for t in $TESTS; do targets="$targets $t"; done
# shellcheck disable=SC2086
if ! cmake --build "$BUILD" -j "$JOBS" --target $targets >"$BUILD/build.log" 2>&1; then
  grep -E "error|Error" -A5 "$BUILD/build.log" | head -60
  echo "sanitize.sh: the build failed (all of it in $BUILD/build.log)"
  exit 1
fi
# oneDNN and OpenMP are not instrumented: their allocations are not leaks of ours, and OpenMP's
# thread pool outlives main.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$BUILD"
# Each test executable runs whole (every case in it), one after the other.
failed=0
for t in $TESTS; do
  if ! "./tests/$t" --gtest_brief=1 "$@" >"$t.log" 2>&1; then
    echo "sanitize.sh: $t FAILED (see $BUILD/$t.log)"; tail -30 "$t.log"; failed=1
  else
    echo "sanitize.sh: $t ok ($(grep -oE '[0-9]+ tests? from [0-9]+ test suites? ran' "$t.log" | head -1))"
  fi
done
exit $failed
