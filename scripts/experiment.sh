#!/usr/bin/env bash
# Runs one of the five studies' experiments end to end (docs/EXPERIMENTS.md):
#
#   scripts/experiment.sh --list                       the experiments and their run times here
#   scripts/experiment.sh NAME [--full | --smoke] [--model FILE] [--out DIR] [--build-dir DIR] [--no-build]
#
# Builds bench/bert_bench (unless --no-build), runs the experiment's benchmark family
# (bert_bench --benchmark_filter='^<Family>/' --benchmark_out=.../results.json; the ranks' rows under
# mpirun when it exists), then scripts/experiments/report.py writes the table (table.md, table.csv)
# and plots (*.png) into bench/results/<date>-NAME/ (or --out) and prints the table.
# Default scale: minutes on a 2-core machine (what is scaled down is written in the table);
# --full: the study's published setup; --smoke: seconds (the test suite).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# name | benchmark family | mpirun rows (filter for 2+ ranks, or -) | default run time here (measured) | study
EXPERIMENTS="
workers|Workers|-|2 min|000: CPU workers x threads
data-parallel|DataParallel|DataParallel|1.5 min|000: 4,000 records on 1 vs N ranks (GPU rows need a GPU)
finetune-batch-size|FinetuneBatchSize|-|7 min CPU, 31 min wall|001: accuracy / F1 / loss per batch size
finetune-memory|FinetuneMemory|FinetuneMemory/config:[034]/|4 min|001: pre / max / post memory per plugin
zoo-deploy|ZooDeploy|-|2 min|002: four models x threads x input size
optimization|Optimization|-|5 min|002: fp32 padded vs packed vs int8 / bf16 (padded, packed)
memory-vs-seq|MemoryVsSeq|-|1 min|003: memory vs sequence length
memory-vs-batch|MemoryVsBatch|-|2.5 min|003: memory vs batch size
time-vs-seq|TimeVsSeq|-|2 min|003: inference time vs sequence length
pretrain|Pretrain|-|3 min|004: MLM + NSP pre-training throughput (LAMB)
squad|Squad|-|40 s|004: SQuAD-style fine-tuning throughput
profile|Profile|-|1.5 min|004: per-op profile of inference and a training step
"

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

list() {
  printf "%-20s %-24s %s\n" "experiment" "default here" "study"
  echo "$EXPERIMENTS" | while IFS='|' read -r name fam mpi time study; do
    [ -n "$name" ] && printf "%-20s %-24s %s\n" "$name" "$time" "$study"
  done
  echo "(measured 2026-12-01 on this 2-core machine while shared, load average about 5: an idle machine is"
  echo " faster; --smoke: seconds each; --full: the published setup, hours on a CPU)"
}

NAME="" SCALE=default OUT="" BUILD_DIR=${BUILD_DIR:-build} BUILD=1 MODEL=""
while [ $# -gt 0 ]; do
  case "$1" in
    --list) list; exit 0 ;;
    --full) SCALE=full ;;
    --smoke) SCALE=smoke ;;
    --out) OUT=$2; shift ;;
    --build-dir) BUILD_DIR=$2; shift ;;
    --no-build) BUILD=0 ;;
    --model) MODEL=$(realpath "$2"); shift ;;
    -h|--help) usage ;;
    -*) echo "experiment.sh: unknown option $1" >&2; usage ;;
    *) [ -z "$NAME" ] || usage; NAME=$1 ;;
  esac
  shift
done
[ -n "$NAME" ] || usage
LINE=$(echo "$EXPERIMENTS" | grep "^$NAME|" || true)
if [ -z "$LINE" ]; then
  echo "experiment.sh: no experiment '$NAME'" >&2
  list >&2
  exit 2
fi
IFS='|' read -r _ FAMILY MPI_FILTER _ STUDY <<<"$LINE"

if [ "$BUILD" = 1 ]; then
  [ -f "$BUILD_DIR/CMakeCache.txt" ] || BUILD_DIR=$BUILD_DIR ./scripts/setup.sh
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target bert_bench
fi
BENCH=$(realpath "$BUILD_DIR/bench/bert_bench")
[ -x "$BENCH" ] || { echo "experiment.sh: no $BENCH (build it, or drop --no-build)" >&2; exit 1; }
[ -n "$OUT" ] || OUT="bench/results/$(date -u +%Y-%m-%d)-$NAME"
mkdir -p "$OUT"
# The engine's commit, before this run rewrites a recorded folder (which would read as uncommitted).
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ "$COMMIT" = unknown ] || git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT+uncommitted"
rm -f "$OUT"/results*.json "$OUT"/*.png
OUT=$(realpath "$OUT")

PY=/usr/bin/python3  # Debian's, with python3-matplotlib (scripts/setup.sh)
[ -x "$PY" ] || PY=python3
FLAGS=$(grep -o -w -E 'avx512f|avx512_vnni|avx512_bf16|avx512_fp16|amx_tile|avx2' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ')
{
  echo "experiment: $NAME (study $STUDY), scale: $SCALE"
  echo "command: scripts/experiment.sh $NAME $([ "$SCALE" = default ] || echo "--$SCALE")${MODEL:+ --model $MODEL}"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), engine commit: $COMMIT"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) hardware threads"
  echo "cpu flags: ${FLAGS:-none of avx2 / avx512f / avx512_vnni / avx512_bf16}"
  echo "load average before the run (uptime): $(uptime | sed 's/.*load average: //')"
} >"$OUT/environment.txt"

export BERT_EXP_SCALE=$SCALE
[ -z "$MODEL" ] || export BERT_EXP_MODEL=$MODEL
[ -n "${BERT_SHARED_DIR:-}" ] || export BERT_SHARED_DIR="$ROOT/../shared"
FLAGS_KV=$(echo $FLAGS | tr ' ' '+')
CONTEXT="experiment=$NAME,scale=$SCALE,engine_commit=$COMMIT,cpu_flags=${FLAGS_KV:-none}"  # one flag: key=value,...
start=$(date +%s)
echo "== $NAME ($SCALE): bert_bench --benchmark_filter='^$FAMILY/'"
"$BENCH" --benchmark_filter="^$FAMILY/" --benchmark_out="$OUT/results.json" --benchmark_out_format=json \
  --benchmark_context="$CONTEXT,processes=1"
if [ "$MPI_FILTER" != "-" ]; then
  if command -v mpirun >/dev/null; then
    MPIRUN=(mpirun --oversubscribe)
    [ "$(id -u)" != 0 ] || MPIRUN+=(--allow-run-as-root)
    RANKS="2"
    [ "$SCALE" != full ] || RANKS="2 4"
    for n in $RANKS; do
      echo "== $NAME: mpirun -np $n bert_bench --benchmark_filter='^$MPI_FILTER'"
      "${MPIRUN[@]}" -np "$n" -x BERT_EXP_SCALE -x BERT_SHARED_DIR ${MODEL:+-x BERT_EXP_MODEL} "$BENCH" \
        --benchmark_filter="^$MPI_FILTER" --benchmark_out="$OUT/results-${n}ranks.json" \
        --benchmark_out_format=json --benchmark_context="$CONTEXT,processes=$n"
    done
  else
    echo "experiment.sh: no mpirun: the multi-rank rows are left out" | tee -a "$OUT/environment.txt"
  fi
fi
{
  echo "load average after the run (uptime): $(uptime | sed 's/.*load average: //')"
  echo "run time: $(( $(date +%s) - start )) s (benchmarks)"
} >>"$OUT/environment.txt"
echo
"$PY" scripts/experiments/report.py "$NAME" "$OUT"
echo
echo "results: $OUT"
