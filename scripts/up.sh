#!/usr/bin/env bash
# The README's first command: install the server side into the project venv (.venv, created on
# first use) and start the inference server + HTTP companion on the default config (or "$@").
#
#   bash scripts/up.sh                          # tiny presets, random weights, CPU or GPU
#   bash scripts/up.sh --config my.toml         # any `vtla-bridge up` options
#
# Which torch: VTLA_TORCH=cuda takes PyPI's torch (the CUDA build on Linux x86_64); VTLA_TORCH=cpu
# takes the CPU build from PyTorch's CPU index; unset: cuda when nvidia-smi finds a GPU, else cpu.
# A torch already in the venv is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/project_venv.sh

torch_pin="torch==2.13.0"
if ! python -c 'import torch' 2>/dev/null; then
  choice=${VTLA_TORCH:-$(command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)}
  echo "== installing $torch_pin ($choice build)"
  if [ "$choice" = cpu ]; then
    python -m pip install -q "$torch_pin" --extra-index-url https://download.pytorch.org/whl/cpu
  else
    python -m pip install -q "$torch_pin"
  fi
fi
constraints=$(mktemp)
python -c 'import torch; print(f"torch=={torch.__version__}")' > "$constraints"  # keep that torch
PIP_CONSTRAINT="$constraints" python -m pip install -q -e ".[server]"
rm -f "$constraints"
exec vtla-bridge up "$@"
