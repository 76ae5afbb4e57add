#!/usr/bin/env bash
# One call on a GPU machine does it all: builds the engine with CUDA for the card, runs every CUDA
# test (the fixtures too), the CUDA benchmarks and the PyTorch peer baseline on the same shapes, and
# writes a summary table. Results land in $OUT (the device tool's output folder) or out/gpu.
#
#   tools/gpu_fetch_deps.sh            # here, once: Debian packages and fixtures into .device/
#   tools/gpu_check.sh [quick]         # there, with .device carried; quick = fewer benchmark shapes
#
# Written on a machine without a GPU: NEVER RUN ON A GPU YET.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
MODE=${1:-full}
log() { echo "== $*"; }

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
date -u +%Y-%m-%dT%H:%MZ >> "$OUT/device.txt"

log "build (sm_90a)"
GEN=""
command -v ninja >/dev/null && GEN="-G Ninja"
cmake -S . -B build-gpu $GEN -DCMAKE_BUILD_TYPE=Release -DBERT_CUDA=ON -DBERT_CUDA_ARCHITECTURES=90a-real \
  >"$OUT/build.log" 2>&1 && cmake --build build-gpu -j "$(nproc)" >>"$OUT/build.log" 2>&1
if [ $? -ne 0 ]; then tail -50 "$OUT/build.log"; exit 1; fi

log "CUDA tests"
(cd build-gpu && BERT_CUDA_SYNC=1 ctest -R 'Cuda|cuda' --output-on-failure -j 4 --timeout 600) >"$OUT/tests.log" 2>&1
tail -5 "$OUT/tests.log"

log "benchmarks"
FILTER='BM_Cuda'
[ "$MODE" = quick ] && FILTER='BM_Cuda(GemmPeak|Inference/model:0/batch:(1|32|128)/seq:128/|TrainStep/model:0/batch:32/seq:128/precision:(0|2)/|TrainStep/model:1/batch:64/seq:128/precision:2/memory:1)'
build-gpu/bench/bert_bench --benchmark_filter="$FILTER" --benchmark_min_time=0.2s \
  --benchmark_format=json --benchmark_out="$OUT/bench.json" >"$OUT/bench.log" 2>&1
tail -3 "$OUT/bench.log"

log "PyTorch baseline"
SHAPES="1x128,8x128,32x128,128x128,8x384,32x384,8x512,32x512,128x512"
[ "$MODE" = quick ] && SHAPES="1x128,32x128,128x128"
PYTHONUNBUFFERED=1 python3 tools/torch_baseline.py --shapes "$SHAPES" --out "$OUT/torch.jsonl" >"$OUT/torch.log" 2>&1
tail -3 "$OUT/torch.log"
PYTHONUNBUFFERED=1 python3 tools/torch_baseline.py --train --reps 10 --out "$OUT/torch_train.jsonl" \
  >"$OUT/torch_train.log" 2>&1
tail -3 "$OUT/torch_train.log"

log "summary"
python3 tools/gpu_summary.py "$OUT/bench.json" "$OUT/torch.jsonl" "$OUT/device.txt" "$OUT/torch_train.jsonl" \
  | tee "$OUT/summary.md"
