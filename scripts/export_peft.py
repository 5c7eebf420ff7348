#!/usr/bin/env python
"""Export a lorazoo adapter as a plain PEFT LoRA adapter (the ``lorazoo-export`` command; the logic is
``lorazoo.export_peft``):

python scripts/export_peft.py <adapter_dir> <out_dir> [--base <local dir or hub id>] [--max-rank N]
"""

from __future__ import annotations

import sys

from lorazoo.export_peft import main

if __name__ == "__main__":
    sys.exit(main())
