#!/usr/bin/env bash
# One call on a GPU machine does it all: builds the engine with CUDA for the card, runs every CUDA
# test (the fixtures too), the CUDA benchmarks and the PyTorch peer baseline on the same shapes, and
# writes a summary table. Results land in $OUT (the device tool's output folder) or out/gpu, as six
# files (the device tool brings back at most eight): device.txt, log.txt (every phase's output),
# tests.log, bench.json (all benchmark phases merged), torch.jsonl (inference and training rows),
# summary.md.
#
#   tools/gpu_fetch_deps.sh            # here, once: Debian packages and fixtures into .device/
#   tools/gpu_check.sh [quick|full]    # there, with .device carried
#
# quick (the default) is sized for one 10-minute call: build, the CUDA tests, the GEMM peaks, bert-base
# inference at seq 128 and the two headline training shapes, and the PyTorch baselines for them. full
# adds every BM_CudaInference / BM_CudaTrainStep shape: run it in a second call. Every phase has its own
# time limit, so a slow phase costs its own results only.
#
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
MODE=${1:-quick}
LOG="$OUT/log.txt"
: >"$LOG"
log() { echo "== $* ($(date -u +%H:%M:%S))" | tee -a "$LOG"; }

# Dependencies the GPU image lacks: unpack the carried Debian packages into a prefix.
if [ -d .device/debs ]; then
  mkdir -p /tmp/deps
  for f in .device/debs/*.deb; do dpkg -x "$f" /tmp/deps; done
  export CMAKE_PREFIX_PATH=/tmp/deps/usr
  export PKG_CONFIG_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu/pkgconfig:/tmp/deps/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=/tmp/deps  # the .pc files say /usr
  export PATH=/tmp/deps/usr/bin:$PATH
  export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  export CPATH=/tmp/deps/usr/include:${CPATH:-}
fi
[ -d .device/shared ] && export BERT_SHARED_DIR=$PWD/.device/shared

log "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/device.txt"
date -u +%Y-%m-%dT%H:%MZ >>"$OUT/device.txt"

log "build (sm_90a)"
GEN=""
command -v ninja >/dev/null && GEN="-G Ninja"
timeout 300 bash -c "cmake -S . -B build-gpu $GEN -DCMAKE_BUILD_TYPE=Release -DBERT_CUDA=ON \
  -DBERT_CUDA_ARCHITECTURES=90a-real && cmake --build build-gpu -j $(nproc)" >>"$LOG" 2>&1
if [ $? -ne 0 ]; then tail -50 "$LOG"; exit 1; fi

log "CUDA tests"
(cd build-gpu && BERT_CUDA_SYNC=1 timeout 240 ctest -R 'Cuda|cuda' --output-on-failure -j 4 --timeout 200) \
  >"$OUT/tests.log" 2>&1
tail -5 "$OUT/tests.log" | tee -a "$LOG"

# One benchmark phase: its filter, its time limit, its JSON (merged into bench.json at the end).
PHASES=()
bench() {
  local name=$1 filter=$2 limit=$3
  log "benchmarks: $name"
  timeout "$limit" build-gpu/bench/bert_bench --benchmark_filter="$filter" --benchmark_min_time=0.2s \
    --benchmark_format=json --benchmark_out="/tmp/bench_$name.json" >>"$LOG" 2>&1
  PHASES+=("/tmp/bench_$name.json")
}
bench gemm 'BM_CudaGemmPeak' 60
if [ "$MODE" = full ]; then
  bench inference 'BM_CudaInference' 400
  bench train 'BM_CudaTrainStep' 400
else
  bench inference 'BM_CudaInference/model:0/batch:(1|32|128)/seq:128/' 90
  bench train 'BM_CudaTrainStep/model:0/batch:(32/seq:128|16/seq:512)/precision:(0|2)/memory:(0|2)/' 120
fi
python3 - "$OUT/bench.json" "${PHASES[@]}" <<'EOF'
import json, sys
merged = {"benchmarks": []}
for path in sys.argv[2:]:
    try:
        data = json.load(open(path))
    except (OSError, ValueError) as e:  # a phase cut off by its time limit writes no JSON
        print(f"{path}: {e}", file=sys.stderr)
        continue
    merged.setdefault("context", data.get("context"))
    merged["benchmarks"] += data.get("benchmarks", [])
json.dump(merged, open(sys.argv[1], "w"), indent=1)
EOF

log "PyTorch baseline"
SHAPES="1x128,32x128,128x128"
[ "$MODE" = full ] && SHAPES="1x128,8x128,32x128,128x128,8x384,32x384,8x512,32x512,128x512"
PYTHONUNBUFFERED=1 timeout 150 python3 tools/torch_baseline.py --shapes "$SHAPES" --out /tmp/torch_infer.jsonl \
  >>"$LOG" 2>&1
TRAIN_SHAPES="bert-base-finetune:32x128,bert-base-finetune:16x512"
[ "$MODE" = full ] && TRAIN_SHAPES="$TRAIN_SHAPES,bert-large-pretrain:64x128,bert-large-pretrain:16x512"
PYTHONUNBUFFERED=1 timeout 150 python3 tools/torch_baseline.py --train --train-shapes "$TRAIN_SHAPES" --reps 10 \
  --out /tmp/torch_train.jsonl >>"$LOG" 2>&1
cat /tmp/torch_infer.jsonl /tmp/torch_train.jsonl >"$OUT/torch.jsonl" 2>/dev/null

log "summary"
python3 tools/gpu_summary.py "$OUT/bench.json" "$OUT/torch.jsonl" "$OUT/device.txt" | tee "$OUT/summary.md"
