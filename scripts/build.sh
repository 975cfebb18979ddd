#!/usr/bin/env bash
# Configures and builds Tessera in build/ (Release, Ninja).
#   scripts/build.sh              everything: the tessera binary, tests, benchmarks
#   scripts/build.sh tessera_cli  only what is named (ninja targets): the quick start builds just
#                                 the binary, so a fresh machine reaches its first step sooner
# Extra CMake arguments go in CMAKE_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC2086  # CMAKE_ARGS is a list of arguments
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
ninja -C build "$@"
