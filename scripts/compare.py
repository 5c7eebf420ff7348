#!/usr/bin/env python
"""Compare runs (the ``lorazoo-compare`` command; the logic is ``lorazoo.compare``):

python scripts/compare.py multirun/2026-11-23/09-40-13 [more dirs ...] --out results --name study
"""

from __future__ import annotations

import sys

from lorazoo.compare import main

if __name__ == "__main__":
    sys.exit(main())
