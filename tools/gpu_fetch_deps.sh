#!/usr/bin/env bash
# Prepares a GPU run (tools/gpu_check.sh) on a machine that can reach Debian's mirror: downloads the
# Debian packages the engine builds against into .device/debs (the GPU machines reach no network and
# lack them) and copies ../shared's fixtures and tokenizer into .device/shared. .device/ is
# git-ignored; pass it to the GPU call as a carried path. Run once per checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device/debs .device/shared
PACKAGES=(libdnnl-dev libdnnl2 nlohmann-json3-dev libutf8proc-dev libutf8proc2 libgtest-dev libgmock-dev
          libbenchmark-dev libbenchmark1debian pkg-config libpkgconf3 pkgconf pkgconf-bin
          ocl-icd-opencl-dev ocl-icd-libopencl1 opencl-c-headers)  # Debian's oneDNN CMake config wants OpenCL
(cd .device/debs && apt-get download "${PACKAGES[@]}")
if [ -d ../shared ]; then
  cp -r ../shared/fixtures .device/shared/
  mkdir -p .device/shared/models && cp -r ../shared/models/bert-base-uncased-tokenizer .device/shared/models/
fi
du -sh .device
