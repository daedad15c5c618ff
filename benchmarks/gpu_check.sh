#!/usr/bin/env bash
# The GPU check in one command: S1-S3 in bf16 (channels_last, torch.compile) and a short ResNet-18 plain vs
# joint quality run on Fashion-MNIST; writes benchmarks/results/gpu.md. About 8 minutes on one H200.
#
#   bash benchmarks/gpu_check.sh           # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --dry     # anywhere: the same code at toy sizes on the CPU
#
# It uses the python on PATH (or $PYTHON), which needs synthcl installed with torch for the GPU; lightly
# (pip install -e '.[bench]') for S1's comparison; Fashion-MNIST where synthcl finds it (not in --dry).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if [[ "${1:-}" != "--dry" ]]; then
  "$PYTHON" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("error: torch sees no CUDA device; run with --dry to check the code on the CPU")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
PY
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
