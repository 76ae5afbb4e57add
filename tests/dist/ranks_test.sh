#!/usr/bin/env bash
# Multi-rank tests on localhost: the communicator's collectives under `mpirun -np 2` and `-np 3`, a
# mismatch between ranks, and a rank that exits, hangs, crashes or reports a failure (the others must
# stop within the timeout with a message naming it). Usage: ranks_test.sh BUILD_DIR [GROUP]
# GROUP: comm | faults | train (default: all). The train group needs ../shared (BERT_SHARED_DIR).
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

if [ "$GROUP" = all ] || [ "$GROUP" = train ]; then
  SHARED=${BERT_SHARED_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)/shared}
  if [ ! -f "$SHARED/data/glue-sst2/train.tsv" ]; then
    echo "SKIP train group: $SHARED/data/glue-sst2 is absent (set BERT_SHARED_DIR)"
  else
    TRAIN="$BUILD/tools/bert_train"
    COMPARE="python3 $(dirname "$0")/compare_models.py"
    T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
    vocab="$SHARED/models/bert-base-uncased-tokenizer/vocab.txt"
    mk_model() {  # mk_model OUT SHAPE: a seeded synthetic classifier every rank loads
      "$BUILD/tools/convert_weights" --synthetic "$2" --architecture BertForSequenceClassification "$1" --vocab "$vocab" >/dev/null
    }
    mk_model "$T/tiny.bert" bert-tiny && mk_model "$T/mini.bert" bert-mini
    # 661 examples in global batches of 33: the last batch holds 1 row (one rank joins with no rows); --limit-dev 101 splits unevenly.
    ARGS=(--model "$T/tiny.bert" --train "$SHARED/data/glue-sst2/train.tsv" --dev "$SHARED/data/glue-sst2/dev.tsv"
          --limit-train 661 --limit-dev 101 --epochs 2 --batch 33 --lr 1e-3 --max-seq 64 --dropout 0 --threads 1
          --log-steps yes)
    losses() { grep -o '"loss":[-0-9.e]*' "$1" | cut -d: -f2; }
    same_losses() {  # same_losses A B: every step's loss within 1e-5
      paste <(losses "$1") <(losses "$2") | awk 'BEGIN{bad=0; n=0} {n++; d=$1-$2; if (d<0) d=-d; if (d>1e-5) bad=1}
        END{if (n < 20) bad=1; exit bad}'
    }
    "$TRAIN" "${ARGS[@]}" --max-steps 30 --out "$T/one.bert" --log "$T/one.jsonl" >/dev/null 2>"$T/one.err"
    check "one-rank reference run" $? "$(tail -5 "$T/one.err")"
    for cfg in "2 0" "3 0" "3 1" "2 1" "2 2" "3 2"; do
      set -- $cfg
      # (1 MiB buckets: several per model, so ZeRO-2's buckets reuse each other's gradient memory)
      out=$(run_ranks "$1" "$TRAIN" "${ARGS[@]}" --max-steps 30 --zero "$2" --bucket-mb 1 --check-every 10 \
            --out "$T/r$1z$2.bert" --log "$T/r$1z$2.jsonl" 2>&1); rc=$?
      cmp=$($COMPARE "$T/one.bert" "$T/r$1z$2.bert" 2>&1); c=$?
      same_losses "$T/one.jsonl" "$T/r$1z$2.jsonl"; l=$?
      grep -q '"world_size":'"$1"',"zero_stage":'"$2" "$T/r$1z$2.jsonl"; w=$?
      # dev metrics reduced over the ranks equal the one-rank evaluation (accuracy exactly, loss 1e-6)
      dev() { grep -o '"dev_[a-z0-9]*":[-0-9.e]*' "$1" | tail -3 | cut -d: -f2; }
      paste <(dev "$T/one.jsonl") <(dev "$T/r$1z$2.jsonl") | awk '{d=$1-$2; if (d<0) d=-d; if (d>1e-6) bad=1} END{exit bad}' \
        || w=1
      check "$1 ranks, ZeRO $2: 30 steps give the one-rank loss curve (1e-5), dev metrics and model ($cmp)" \
            $(( rc != 0 || c != 0 || l != 0 || w != 0 )) "rc $rc: $(echo "$out" | tail -8)"
    done
    # Gradient accumulation: only the last micro-step communicates (ZeRO-2: every one, into the shard).
    "$TRAIN" "${ARGS[@]}" --max-steps 12 --accumulate 3 --out "$T/acc.bert" --log "$T/acc.jsonl" >/dev/null 2>&1
    for z in 0 2; do
      out=$(run_ranks 2 "$TRAIN" "${ARGS[@]}" --max-steps 12 --accumulate 3 --zero $z --bucket-mb 1 \
            --out "$T/acc$z.bert" --log "$T/acc$z.jsonl" 2>&1); rc=$?
      cmp=$($COMPARE "$T/acc.bert" "$T/acc$z.bert" 2>&1); c=$?
      synced=$(grep -o '"synced_steps":[0-9]*' <<<"$(tail -1 "$T/acc$z.jsonl")" | cut -d: -f2)
      want=$([ $z = 0 ] && echo 12 || echo 36)
      check "2 ranks, ZeRO $z, --accumulate 3: the one-rank model ($cmp), $synced reductions for 12 steps" \
            $(( rc != 0 || c != 0 || synced != want )) "rc $rc (want $want reductions): $(echo "$out" | tail -5)"
    done
    # Checkpoints: written by rank 0 in the one-process format; resumed bit-identically at the same
    # world size, and on another world size (and ZeRO stage) within tolerance.
    run_ranks 2 "$TRAIN" "${ARGS[@]}" --max-steps 15 --checkpoint "$T/ck.bert" --checkpoint-every 15       --out "$T/half.bert" >/dev/null 2>&1
    out=$(run_ranks 2 "$TRAIN" "${ARGS[@]}" --max-steps 30 --resume "$T/ck.bert" --out "$T/res2.bert" 2>&1); rc=$?
    cmp=$($COMPARE "$T/r2z0.bert" "$T/res2.bert" --exact 2>&1); c=$?
    check "2 ranks resume from a 2-rank checkpoint bit-identically ($cmp)" $(( rc != 0 || c != 0 )) "$(echo "$out" | tail -5)"
    out=$(run_ranks 3 "$TRAIN" "${ARGS[@]}" --max-steps 30 --zero 1 --resume "$T/ck.bert" --out "$T/res3.bert" 2>&1); rc=$?
    cmp=$($COMPARE "$T/one.bert" "$T/res3.bert" 2>&1); c=$?
    check "3 ranks (ZeRO 1) resume a 2-rank checkpoint ($cmp)" $(( rc != 0 || c != 0 )) "$(echo "$out" | tail -5)"
    # Ranks given different model files: the first collective names the mismatch; nothing hangs.
    out=$(timeout 120 mpirun $( [ "$(id -u)" -eq 0 ] && echo --allow-run-as-root ) --oversubscribe --bind-to none           --mca btl self,vader -np 1 "$TRAIN" "${ARGS[@]}" --out "$T/x.bert" :           -np 1 "$TRAIN" "${ARGS[@]/$T\/tiny.bert/$T/mini.bert}" --out "$T/x.bert" 2>&1); rc=$?
    grep -q "the ranks called different collectives" <<<"$out"; g=$?
    check "ranks with different model files are told so" $(( rc == 0 || rc == 124 || g != 0 )) "rc $rc: $(echo "$out" | tail -8)"
    # Data-parallel inference: 37 rows over 1, 2, 3 ranks (5 rows per run) give the same outputs,
    # written once by rank 0 in input order.
    python3 "$(dirname "$0")/make_inputs.py" "$T/in.safetensors" 37 24 30522
    "$BUILD/tools/bert_run" --model "$T/one.bert" --inputs "$T/in.safetensors" --outputs "$T/out1.safetensors" \
      --batch 5 2>/dev/null
    for np in 2 3; do
      out=$(run_ranks $np "$BUILD/tools/bert_run" --model "$T/one.bert" --inputs "$T/in.safetensors" \
            --outputs "$T/out$np.safetensors" --batch 5 2>&1); rc=$?
      cmp=$($COMPARE "$T/out1.safetensors" "$T/out$np.safetensors" 2>&1); c=$?
      grep -q '"ranks":'$np',"rows":37' <<<"$out"; g=$?
      check "bert_run on $np ranks: the one-rank outputs in input order ($cmp)" $(( rc != 0 || c != 0 || g != 0 )) \
            "rc $rc: $(echo "$out" | tail -5)"
    done
    # Text mode over a file of lines: one JSON line per input, in input order, from 3 ranks.
    tail -n +2 "$SHARED/data/glue-sst2/dev.tsv" | head -40 | cut -f1 > "$T/lines.txt"
    "$BUILD/tools/bert_run" --model "$T/one.bert" --text-file "$T/lines.txt" > "$T/lines1.jsonl" 2>/dev/null
    out=$(run_ranks 3 "$BUILD/tools/bert_run" --model "$T/one.bert" --text-file "$T/lines.txt" 2>&1 >"$T/lines3.jsonl"); rc=$?
    n=$(grep -c '"probabilities"' "$T/lines3.jsonl")
    cmp -s "$T/lines1.jsonl" "$T/lines3.jsonl"; c=$?
    check "bert_run --text-file on 3 ranks: the one-rank JSON lines, in order ($n lines)" \
          $(( rc != 0 || c != 0 || n != 40 )) "rc $rc: $(echo "$out" | tail -5)"
    # A rank that dies mid-training stops the job at once, named.
    start=$(date +%s)
    out=$(BERT_COMM_TIMEOUT=10 BERT_COMM_FAULT="rank=1,at=40,do=exit" timeout 120           bash -c "$(declare -f run_ranks); run_ranks 2 '$TRAIN' $(printf "'%s' " "${ARGS[@]}") --out '$T/y.bert'" 2>&1); rc=$?
    secs=$(( $(date +%s) - start ))
    grep -q "rank 0 was stopped by the launcher in collective #40" <<<"$out"; g=$?
    check "a rank that exits mid-training stops the job in ${secs} s, named" $(( rc == 0 || rc == 124 || g != 0 ))           "rc $rc: $(echo "$out" | tail -8)"
  fi
fi

[ $failures -eq 0 ] && echo "all multi-rank checks passed" || echo "$failures multi-rank check(s) failed"
exit $(( failures != 0 ))
