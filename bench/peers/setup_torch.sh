#!/usr/bin/env bash
# Creates bench/peers/.venv with PyTorch from PyPI, for the side-by-side training-step benchmark
# (bench/peers/compare.sh). Neither Tessera's build nor its tests need it.
#   bench/peers/setup_torch.sh            # idempotent: reuses an existing venv
# PyPI's Linux wheel of torch also pulls its CUDA runtime packages (a few GB); only the CPU is
# used here.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade pip >/dev/null
"$venv/bin/python" -m pip install torch numpy safetensors
"$venv/bin/python" - <<'PY'
import torch
print(f"torch {torch.__version__}; threads {torch.get_num_threads()}; "
      f"mkldnn {torch.backends.mkldnn.is_available()}; "
      f"bf16 supported {torch.backends.mkldnn.is_available()}")
print(torch.__config__.show())
PY
