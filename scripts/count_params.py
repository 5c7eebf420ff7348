#!/usr/bin/env python
"""Paper-count tables (the ``lorazoo-count`` command; the logic is ``lorazoo.counting_tables``):

python scripts/count_params.py [--model roberta-base --projection vera --rank 1024 --targets query,value]
"""

from __future__ import annotations

import sys

from lorazoo.counting_tables import main

if __name__ == "__main__":
    sys.exit(main())
