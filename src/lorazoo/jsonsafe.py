"""JSON from files and command lines that may be hostile: nesting depth is bounded, errors are one line.

Python's json module raises RecursionError on input nested about a thousand deep, and any recursive
walk over a parsed document can do the same; both surface as tracebacks. Depth is checked on the text
before parsing (brackets outside strings), so nothing deep is ever built.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64  # far above any lorazoo file (adapter configs and data records are < 10 deep)


def nesting_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of ``text``, ignoring brackets inside double-quoted strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads(text: str, where: str, error: type[Exception], max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` raising ``error("<where>: …; valid: …")`` for bad or too deeply nested JSON."""
    depth = nesting_depth(text)
    if depth > max_depth:
        raise error(f"{where}: JSON nested {depth} levels deep; valid: at most {max_depth}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise error(f"{where}: not valid JSON ({exc})") from None
