#!/usr/bin/env bash
# Builds the parsers' libFuzzer targets with clang + ASan + UBSan (fuzz/, -DBERT_FUZZ=ON, its own
# build tree) and runs each one for SECONDS (default 20) on fuzz/corpus/<target>/, one process per
# target, one after the other. New inputs go to $FUZZ_BUILD_DIR/corpus/<target> (the repository's
# seeds are only read); a crash, leak, UB report or hang (-timeout 10 s) fails the script and leaves
# the input in $FUZZ_BUILD_DIR/artifacts/ (keep it as a regression test in fuzz/corpus/ and tests/).
# Prints one line per target: executions and seconds. FUZZ_TARGETS="fuzz_zip fuzz_pickle" picks some.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-20}
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${FUZZ_BUILD_JOBS:-$(nproc)}

if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ not found (apt-get install clang libclang-rt-dev); skipping the fuzz stage" >&2
  exit 1
fi
CC=clang CXX=clang++ cmake -S . -B "$BUILD" -DBERT_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$JOBS" >/dev/null

targets=${FUZZ_TARGETS:-$(cd fuzz && ls fuzz_*.cc | sed 's/\.cc$//')}
mkdir -p "$BUILD/artifacts" "$BUILD/logs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=0
printf '%-22s %12s %8s %s\n' target executions seconds result
for t in $targets; do
  name=${t#fuzz_}
  work="$BUILD/corpus/$name"
  mkdir -p "$work"
  log="$BUILD/logs/$t.log"
  set +e
  "$BUILD/fuzz/$t" "$work" "fuzz/corpus/$name" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$t-" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 | awk '{print $2" "$5}' || true)
  [ -n "$runs" ] || runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | awk '{print $2}' || true) ?"
  result=ok
  if [ $rc -ne 0 ]; then result="FAILED (rc $rc, see $log)"; failed=1; fi
  printf '%-22s %12s %8s %s\n' "$t" ${runs} "$result"
done
exit $failed
