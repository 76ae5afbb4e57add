#!/usr/bin/env bash
# Installs the Debian packages the engine builds against (once; safe to run again) and configures
# the build directory. Used by scripts/test.sh and scripts/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(build-essential cmake pkg-config libdnnl-dev nlohmann-json3-dev libutf8proc-dev
          libgtest-dev libgmock-dev libbenchmark-dev libcpp-httplib-dev chromium nodejs
          openmpi-bin libopenmpi-dev
          python3-matplotlib  # scripts/experiment.sh's plots (scripts/experiments/report.py)
          ocl-icd-opencl-dev opencl-c-headers)  # Debian's oneDNN CMake config requires OpenCL
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
echo "setup: configured $BUILD_DIR"
