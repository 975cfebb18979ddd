#!/usr/bin/env bash
# The README's first command: install dependencies (Debian packages), build, write the KJV
# corpus, and train the default GPT (configs/gpt_kjv.toml) into runs/gpt_kjv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh tessera_cli  # the binary only; the test command builds the rest
bash scripts/prepare-data.sh
./build/tessera train configs/gpt_kjv.toml "$@"
