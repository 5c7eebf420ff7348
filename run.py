#!/usr/bin/env python
"""Train an adapter: ``python run.py projection=unilora task=glue/sst2`` (see ``python run.py --help``)."""

from lorazoo.cli import main

if __name__ == "__main__":
    main()
