#!/usr/bin/env bash
# Creates bench/peers/.venv-tok with Hugging Face `tokenizers` from PyPI, for the agreement and
# speed comparison of Tessera's BPE tokenizer (bench/peers/tokenizers_compare.py). Neither
# Tessera's build nor its tests need it.
#   bench/peers/setup_tokenizers.sh       # idempotent: reuses an existing venv
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-tok"
python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -c "import tokenizers" 2>/dev/null ||
  "$venv/bin/python" -m pip install --quiet tokenizers
"$venv/bin/python" -c "import tokenizers; print('tokenizers', tokenizers.__version__)"
