"""A benchmark's results file, then (when asked) the markdown report rebuilt with it.

The one module that ties a benchmark run to ``report.py``: ``common`` stays below the report (which reads its
helpers), so the imports of benchmarks/ run one way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import common
from .report import write_report


def publish(
    out_dir: Path, name: str, payload: dict[str, Any], report: str | Path | None = None, benchmark: str | None = None
) -> Path:
    """``common.write_results`` and, with ``report``, that report regenerated with this file as its
    ``benchmark`` section (a partial run's file included only when it is the one just written)."""
    path = common.write_results(out_dir, name, payload, benchmark)
    if report:
        write_report(out_dir, report, files={benchmark or name: name})
    return path
