#!/usr/bin/env bash
# Lint, format check and type check, configured in pyproject.toml ([tool.ruff], [tool.mypy]).
# Usage: bash scripts/lint.sh [paths...]   (default: the whole repository for ruff, src/lorazoo for mypy)
set -euo pipefail
cd "$(dirname "$0")/.."
paths=("$@")
if [ ${#paths[@]} -eq 0 ]; then paths=(.); fi
ruff check "${paths[@]}"
ruff format --check "${paths[@]}"
mypy
