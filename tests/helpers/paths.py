"""Where the repository and the shared real-data files are, for tests in any subfolder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_PY = REPO_ROOT / "run.py"
# real GLUE/GSM8K/... files when present (tests that need them skip otherwise); the env var serves worktrees
SHARED_DATA = Path(os.environ.get("LORAZOO_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
