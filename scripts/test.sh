#!/usr/bin/env bash
# Builds (if needed) and runs the whole test suite through CTest, in two configurations:
#   build/      the project as the quick start builds it (CPU; the CUDA backend compiled by nvcc
#               where the toolkit is installed, its tests skipping without a GPU);
#   build-emu/  the CUDA backend built for the emulated CUDA device (src/emu, docs/CUDA.md):
#               every test in tests/cuda runs on the CPU, plus the emulator's own tests.
# TESSERA_TEST_EMU=0 skips the second.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f build/build.ninja ]] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build
(cd build && OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} ctest --output-on-failure --timeout 600 -j1)

if [[ "${TESSERA_TEST_EMU:-1}" != 0 ]]; then
  [[ -f build-emu/build.ninja ]] ||
    cmake -S . -B build-emu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA_EMULATION=ON \
      -DTESSERA_BUILD_BENCH=OFF >/dev/null
  ninja -C build-emu emu_tests
  # Two at a time: most of these tests are single-threaded (a stream's kernels run on its thread).
  (cd build-emu && OMP_NUM_THREADS=1 ctest -L emu --output-on-failure --timeout 900 -j2)
fi
