#!/usr/bin/env python
"""Fair comparison of projections (the ``lorazoo-fair`` command; the logic is ``lorazoo.study.fair``):

python scripts/fair_compare.py --task glue/sst2 --projections lora,vera,unilora --trials 6 --seeds 0,1,2 --out runs/fair
"""

from __future__ import annotations

import sys

from lorazoo.study.fair import main

if __name__ == "__main__":
    sys.exit(main())
