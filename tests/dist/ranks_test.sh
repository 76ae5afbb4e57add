#!/usr/bin/env bash
# Multi-rank tests on localhost: the communicator's collectives under `mpirun -np 2` and `-np 3`, a
# mismatch between ranks, and a rank that exits, hangs, crashes or reports a failure (the others must
# stop within the timeout with a message naming it). Usage: ranks_test.sh BUILD_DIR [GROUP]
# GROUP: comm | faults (default: both).
set -uo pipefail
BUILD=${1:?build dir}
GROUP=${2:-all}
source "$(dirname "$0")/mpi_env.sh"
COMM_TEST="$BUILD/tests/comm_test"
failures=0
check() {  # check NAME CONDITION_RESULT MESSAGE
  if [ "$2" = 0 ]; then echo "PASS $1"; else echo "FAIL $1: $3"; failures=$((failures + 1)); fi
}

if [ "$GROUP" = all ] || [ "$GROUP" = comm ]; then
  for np in 2 3; do
    out=$(run_ranks "$np" "$COMM_TEST" 2>&1); rc=$?
    check "comm_test on $np ranks" $rc "$(echo "$out" | tail -30)"
  done
  out=$(BERT_TEST_MISMATCH=1 run_ranks 2 "$COMM_TEST" --gtest_filter='CommMismatch.*' 2>&1); rc=$?
  grep -q "different collectives: rank 0 collective #1 (allreduce(sum) of 10 f32), rank 1 collective #1 (allreduce(sum) of 11 f32)" <<<"$out"
  g=$?
  passed=$(grep -c "PASSED.*1 test" <<<"$out")  # each rank's test saw the error (the job itself fails)
  check "a count mismatch is named on both ranks" $(( g != 0 || passed != 2 )) "$(echo "$out" | tail -20)"
fi

if [ "$GROUP" = all ] || [ "$GROUP" = faults ]; then
  for action in exit crash hang fail; do
    start=$(date +%s)
    out=$(BERT_COMM_TIMEOUT=5 BERT_COMM_FAULT="rank=1,at=20,do=$action" \
          timeout 120 bash -c "$(declare -f run_ranks); run_ranks 3 '$COMM_TEST' --gtest_filter='CommFault.*'" 2>&1)
    rc=$?
    secs=$(( $(date +%s) - start ))
    case $action in
      fail) want="rank 1 failed: BERT_COMM_FAULT injected failure" ;;
      hang) want="rank(s) 1 did not reach it within 5 s" ;;
      *)    want="rank 1" ;;
    esac
    ok=0
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -qF "$want" <<<"$out" && [ $secs -lt 60 ] || ok=1
    check "a rank that does '$action' at collective 20 stops the job in ${secs} s, named" $ok \
          "rc $rc, wanted '$want' in: $(echo "$out" | tail -25)"
  done
fi

[ $failures -eq 0 ] && echo "all multi-rank checks passed" || echo "$failures multi-rank check(s) failed"
exit $(( failures != 0 ))
