"""What a run needs to be reproduced from its directory alone: the code (lorazoo version, git commit and dirty
flag), the libraries, each data file's sha256, the single job's command, the CPU time it took, and the config as
used (the values fitted to the model in place of the composed ones: ``config_used.yaml``).

``lorazoo-rerun <run dir>`` (lorazoo.rerun) reads these back.
"""

from __future__ import annotations

import copy
import platform
import resource
import shlex
import subprocess
import time
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from lorazoo.files import file_sha256
from lorazoo.version import __version__

CONFIG_USED = "config_used.yaml"
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets")
# command-line flags that pick the config rather than override it (kept in a sweep job's command)
_CONFIG_FLAGS = ("--config-path", "--config-name", "--config-dir", "-cp", "-cn", "-cd")


def git_state(where: Path | None = None) -> dict[str, Any] | None:
    """{"commit", "dirty"} of the checkout lorazoo is imported from; None when it is not a git checkout
    (an installed wheel) or git is missing."""
    where = where or Path(__file__).resolve().parents[4]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if not (where / ".git").exists():
        return None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a result depends on (None: not installed), and Python's."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def code_record() -> dict[str, Any]:
    return {"lorazoo_version": __version__, "git": git_state(), "versions": library_versions()}


def data_checksums(paths: Iterable[Path]) -> dict[str, str]:
    """{resolved path: sha256} of every data file the task read (hub data has no local file to hash)."""
    return {str(p.resolve()): file_sha256(p) for p in dict.fromkeys(paths) if p.is_file()}


def job_command(argv: list[str], overrides: list[str], multirun: bool) -> str:
    """The command that runs this one job: the command line itself for a single run; for a job of a sweep
    (``-m``), the program, its config flags and this job's own overrides (not the whole sweep's)."""
    if not multirun:
        return shlex.join(["python", *argv])
    kept = [argv[0]]
    args = iter(argv[1:])
    for arg in args:
        if arg in _CONFIG_FLAGS:
            kept += [arg, next(args, "")]
        elif arg.startswith(tuple(f + "=" for f in _CONFIG_FLAGS)):
            kept.append(arg)
    return shlex.join(["python", *kept, *overrides])


class CpuClock:
    """CPU seconds of this process and of its finished children (data-loader workers), from a start point."""

    def __init__(self) -> None:
        self.start = self.now()

    @staticmethod
    def now() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    def elapsed(self) -> float:
        return self.now() - self.start


def config_used(cfg: DictConfig, fitted: dict[str, Any]) -> dict[str, Any]:
    """The config with each fitted key (``projection.kwargs.d``) at the value the run used. Interpolations stay
    as written (an ``${oc.env:...}`` is resolved again by the rerun, its value never lands in the file)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for key, value in fitted.items():
            OmegaConf.update(cfg, key, value, merge=False)
    plain = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(plain, dict):
        raise TypeError(f"a run config is a mapping, got {type(plain).__name__}")
    return {str(k): v for k, v in plain.items()}


def write_config_used(out: Path, cfg: DictConfig, fitted: dict[str, Any]) -> Path:
    """``<run dir>/config_used.yaml``, and ``.hydra/config.yaml`` when Hydra's copy is there: both say what ran."""
    from lorazoo.files import atomic_write

    used = OmegaConf.create(config_used(cfg, fitted))
    written = out / CONFIG_USED
    targets = [written] + ([out / ".hydra" / "config.yaml"] if (out / ".hydra" / "config.yaml").is_file() else [])
    for path in targets:

        def save(tmp: str) -> None:
            OmegaConf.save(used, tmp)

        atomic_write(path, save)
    return written


DATA_KEYS = ("task.data_dir", "task.data_file", "task.train_file", "task.eval_file")


def data_path_origin(
    cfg: DictConfig, overrides: list[str], applied: dict[str, Any], data_from: str | None, experiment: str | None
) -> str:
    """Where the task's data path(s) came from, for a data error: the command line, data_root, an experiment's
    task_overrides or a config file."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    said = []
    for key in DATA_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if not value:
            continue
        if key in given:
            source = "the command line"
        elif key in applied:
            source = f"experiment {experiment or cfg.get('name')!r} (its task_overrides)"
        elif data_from is not None and str(value) == data_from:
            source = f"data_root={cfg.get('data_root')!r}"
        else:
            source = f"the config files (configs/task/, experiment={experiment})" if experiment else "configs/task/"
        said.append(f"{key}={str(value)!r} came from {source}")
    if not said:
        return "no local data path is set: give data_root=<dir> or task.data_dir=<dir>"
    return "; ".join(said) + "; override it with data_root=<dir> or task.data_dir=<dir> on the command line"
