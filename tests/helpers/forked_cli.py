"""`python run.py ...` as a real child process, without paying Python's torch/transformers import each time.

Each child is forked from a forkserver that imported lorazoo's CLI once (a clean, single-threaded process:
forking the pytest worker itself, whose torch thread pools are running, could deadlock). The child sets argv,
cwd and environment, points fds 1 and 2 at files and calls ``lorazoo.cli.main`` as run.py does: exit code,
stdout and stderr are the process's own. Only for cases that fail before training (bad input): environment
read at import time (``HF_HUB_OFFLINE`` in huggingface_hub's constants) is the forkserver's, so a case that
changes it needs a plain subprocess.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_context = None
PRELOAD = [
    "lorazoo.cli",
    "lorazoo.train",
    "lorazoo.train.runner",
    "transformers.modeling_utils",
    "transformers.models.bert.modeling_bert",
    "transformers.models.llama.modeling_llama",
    "datasets",
    "helpers.forked_cli",  # this module: each forked child unpickles _child from it
]
RUN_PY = str(Path(__file__).resolve().parents[2] / "run.py")


def _ctx():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(argv: list[str], env: dict[str, str], cwd: str, out: str, err: str) -> None:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    sys.argv = [RUN_PY, *argv]
    code = 0
    try:
        from lorazoo.cli import main

        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the interpreter would do with an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_cli(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Like ``subprocess.run([python, run.py, *argv], env=env, cwd=cwd, capture_output=True, text=True)``."""
    with tempfile.TemporaryDirectory() as scratch:
        out, err = os.path.join(scratch, "out"), os.path.join(scratch, "err")
        child = _ctx().Process(target=_child, args=(argv, env, str(cwd), out, err))
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired([RUN_PY, *argv], timeout)
        return subprocess.CompletedProcess(
            [sys.executable, RUN_PY, *argv], child.exitcode, Path(out).read_text(), Path(err).read_text()
        )
