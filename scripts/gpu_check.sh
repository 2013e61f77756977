#!/usr/bin/env bash
# GPU check for one GPU (an H200: about 5 minutes, well under 10): randomly initialised Qwen2-1.5B student training
# step (sdpa, flash-attention 2 where installed), teacher scoring, exact IEM search at 1,000,000 passages, peak
# memory, and one step under each accelerate config. No downloads. Writes one JSON (default gpu_check.json).
#   bash scripts/gpu_check.sh [OUTPUT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
OUTPUT=${1:-gpu_check.json}
PYTHON=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 570 "$PYTHON" benchmarks/gpu_check.py --output "$OUTPUT"
