"""Hydra config nodes derived from the projection files, so a new method is one file for the command line too.

Stored in Hydra's ConfigStore for every registered projection:
  ``projection_options/<name>``  its Options dataclass defaults (``projection.kwargs``; each option can be
                                 overridden from the command line while its default lives in ONE place);
  ``projection/<name>``          the paper setting its file declares (``paper = PaperSettings(...)``): rank,
                                 α, dropout, lr(s), weight decay, with the option defaults as ``kwargs``;
  ``hydra/sweeper/lr_<name>``    the lr search of the fair protocol: log-uniform from 1/10 to 100 × each
                                 declared lr (the group lrs where the paper trains groups at their own lr).
A yaml of the same name in the config directory (configs/projection/<name>.yaml, configs/hydra/sweeper/
lr_<name>.yaml) takes the node's place: yaml is an optional override (for comments a declaration cannot
carry), never required. Nothing is derived for a projection that declares no ``paper``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from lorazoo.projections import PaperSettings, get_projection_class, projection_names

GROUP = "projection_options"
LR_SPAN = (Decimal("0.1"), Decimal(100))  # the fair protocol's lr search: 1/10 .. 100 × the paper lr


def projection_node(name: str, paper: PaperSettings) -> dict[str, Any]:
    """``projection/<name>`` (package _global_): the declared paper setting and the option defaults."""
    optimizer: dict[str, Any] = {"lr": paper.lr, "weight_decay": paper.weight_decay}
    if paper.group_lrs:
        optimizer["groups"] = {group: {"lr": lr} for group, lr in paper.group_lrs}
    return {
        "defaults": [{f"/{GROUP}@projection.kwargs": name}, "_self_"],
        "projection": {"name": name, "rank": paper.rank, "alpha": paper.alpha, "dropout": paper.dropout},
        "optimizer": optimizer,
    }


def lr_keys(paper: PaperSettings) -> dict[str, float]:
    """The lr config keys a search moves: each group lr when groups are declared (the plain lr is then only
    the fallback for groups nobody named), else ``optimizer.lr``."""
    if paper.group_lrs:
        return {f"optimizer.groups.{group}.lr": lr for group, lr in paper.group_lrs}
    return {"optimizer.lr": paper.lr}


def log_interval(lr: float) -> str:
    """Optuna sweeper syntax for log-uniform over [lr/10, 100·lr], computed in decimal (4e-4/10 is 4e-05)."""
    low, high = (float(Decimal(repr(lr)) * factor) for factor in LR_SPAN)
    return f"tag(log, interval({low!r}, {high!r}))"


def lr_sweeper_node(paper: PaperSettings) -> dict[str, Any]:
    """``hydra/sweeper/lr_<name>`` (package hydra.sweeper): lr_search.yaml's shared settings + the lr space."""
    return {"defaults": ["lr_search"], "params": {key: log_interval(lr) for key, lr in lr_keys(paper).items()}}


def register_projection_options(config_dir: str | Path | None = None) -> None:
    """Store the option defaults of every registered projection, and its derived ``projection/<name>`` and
    ``hydra/sweeper/lr_<name>`` nodes where ``config_dir`` has no yaml of that name (a stored node beside a
    yaml of the same name would be merged into it by Hydra's deprecated schema matching)."""
    store = ConfigStore.instance()
    root = Path(config_dir) if config_dir is not None else None
    for name in projection_names():
        cls = get_projection_class(name)
        store.store(group=GROUP, name=name, node=dict(cls.defaults))
        if cls.paper is None:
            continue
        if root is None or not (root / "projection" / f"{name}.yaml").is_file():
            store.store(group="projection", name=name, node=projection_node(name, cls.paper), package="_global_")
        if root is None or not (root / "hydra" / "sweeper" / f"lr_{name}.yaml").is_file():
            store.store(
                group="hydra/sweeper", name=f"lr_{name}", node=lr_sweeper_node(cls.paper), package="hydra.sweeper"
            )
