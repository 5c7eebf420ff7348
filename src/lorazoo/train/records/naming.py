"""Readable names for job directories and W&B runs.

A sweep job dir is ``<num>_<overrides>``; an override such as ``task=glue/sst2`` would nest it two levels
deep, so the overrides are slugged (``/`` → ``-``, brackets and quotes dropped). W&B groups name the
experiment (or the sweep) and when it started; run names say projection, task, model and seed.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

RESOLVER = "lorazoo_slug"
SWEEP_RESOLVER = "lorazoo_sweep_folder"
SWEEPERS_RESOLVER = "lorazoo_sweepers"
MAX_DIR_NAME = 150  # well under the 255-byte limit of a path component, with room for the job number
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[/_ T-](\d{2}-\d{2}-\d{2}))?")


def slug(text: str) -> str:
    """One flat, shell-friendly path component: ``task=glue/sst2,seed=0`` → ``task=glue-sst2,seed=0``."""
    out = re.sub(r"[/\\]+", "-", str(text))
    out = re.sub(r"[{}\[\]'\"()<>|*?$`]+", "", out)
    out = re.sub(r"\s+", "_", out).strip("._-") or "run"
    if len(out) > MAX_DIR_NAME:  # keep it unique: a short hash of the full text
        out = out[: MAX_DIR_NAME - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return out


def sweep_folder(name: str | None, stamp: str) -> str:
    """A named sweep (``name=`` or an experiment's) always gets the same folder, so relaunching the same
    command continues it; an unnamed one gets Hydra's dated folder ``stamp``."""
    return slug(str(name)) if name not in (None, "") else stamp


def _sweep_folder_of(name: str | None, stamp: str, _root_: Any) -> str:
    """``sweep_folder`` as the config's resolver: a ``name`` read by ``${oc.env:...}`` names the folder by its
    text, never its value (a directory name is on disk; the variable may hold a secret)."""
    raw = OmegaConf.to_container(_root_, resolve=False) if OmegaConf.is_dict(_root_) else {}
    written = raw.get("name") if isinstance(raw, dict) else None
    return sweep_folder(written if isinstance(written, str) and "oc.env" in written else name, stamp)


def register_resolvers() -> None:
    """``${lorazoo_slug:...}`` (hydra.sweep.subdir) and ``${lorazoo_sweep_folder:...}`` (hydra.sweep.dir) for
    configs/config.yaml; safe to call repeatedly."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, slug)
    if not OmegaConf.has_resolver(SWEEP_RESOLVER):
        OmegaConf.register_new_resolver(SWEEP_RESOLVER, _sweep_folder_of)
    if not OmegaConf.has_resolver(SWEEPERS_RESOLVER):
        OmegaConf.register_new_resolver(SWEEPERS_RESOLVER, sweeper_presets)


def sweeper_presets() -> str:
    """``${lorazoo_sweepers:}`` in configs/hydra/help: the hydra/sweeper options (lr_<projection> presets are
    registered from the projection files, so a fixed list in the help text would go stale)."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return "(see configs/hydra/sweeper/)"
    names = GlobalHydra.instance().config_loader().get_group_options("hydra/sweeper")
    return ", ".join(n for n in names if n.startswith("lr_") and n != "lr_search") or "none"  # lr_search: shared


def run_name(projection: str, task: str, model: str, seed: int) -> str:
    """The W&B run name: ``unilora-glue-sst2-minilm-s0``."""
    return f"{projection}-{slug(task)}-{model}-s{seed}"


def sweep_stamp(sweep_dir: str | Path) -> str:
    """When the sweep started: the date/time in Hydra's default sweep dir, else its multirun.yaml's mtime."""
    found = _DATE.search(str(sweep_dir))
    if found:
        return found.group(1) + (f"_{found.group(2)}" if found.group(2) else "")
    marker = Path(sweep_dir) / "multirun.yaml"  # written once by Hydra when the sweep starts
    seconds = marker.stat().st_mtime if marker.is_file() else time.time()
    return time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(seconds))


def wandb_group(name: str | None, experiment: str | None, sweep_dir: str | Path | None) -> str | None:
    """``<experiment or sweep name>_<date>``; None for a single run with no name (W&B then groups nothing)."""
    if sweep_dir is not None:
        sweep_label = name or experiment or _sweep_label(Path(sweep_dir))
        return f"{slug(sweep_label)}_{sweep_stamp(sweep_dir)}"
    label = name or experiment
    return f"{slug(label)}_{time.strftime('%Y-%m-%d')}" if label else None


def _sweep_label(sweep_dir: Path) -> str:
    """A user-chosen sweep dir names the sweep; Hydra's dated default (multirun/<date>/<time>) does not."""
    if _DATE.search(str(sweep_dir)):
        return "sweep"
    return sweep_dir.name or "sweep"
