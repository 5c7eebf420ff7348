#!/usr/bin/env python
"""Score a finished run with lm-evaluation-harness (the ``lorazoo-evaluate`` command; the logic is
``lorazoo.evaluate``):

python scripts/evaluate.py <run dir> --tasks mmlu bbh_cot_fewshot [--limit N] [--base DIR] [--out FILE]
"""

from __future__ import annotations

import sys

from lorazoo.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
