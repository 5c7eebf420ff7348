"""Python code an lm-eval task folder would run: the ``!function`` tags of its task yamls.

lm-eval imports the module a ``!function module.name`` tag names (from the yaml's folder) when the task loads,
so an ``eval.lm_eval.include_path`` folder can run code before training even starts. The tags are found here,
in the folder's yamls and in every yaml they ``include:``, before lm-eval reads any of them; running them needs
the explicit opt-in ``eval.lm_eval.allow_include_path_code=true``. A tag inside a comment counts too: a
refusal that is not needed costs one flag, a missed tag would run code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

OPT_IN = "eval.lm_eval.allow_include_path_code=true"
_FUNCTION = re.compile(r"!function\s+([\w.]+)")
_INCLUDE = re.compile(r"""^\s*include:\s*['"]?([^'"#\s]+)""")


def code_in_task_yamls(folders: Iterable[str | Path]) -> list[str]:
    """``file:line: !function name`` for every tag in the task yamls under ``folders`` and the yamls they include."""
    queue = [p for folder in folders for p in sorted(Path(folder).rglob("*")) if p.suffix in (".yaml", ".yml")]
    seen: set[Path] = set()
    found = []
    while queue:
        path = queue.pop(0).resolve()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            found += [f"{path}:{lineno}: !function {m.group(1)}" for m in _FUNCTION.finditer(line)]
            include = _INCLUDE.match(line)
            if include:
                queue.append(path.parent / include.group(1))
    return found
