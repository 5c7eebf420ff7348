"""After Hydra rejects a misspelled key, name the keys that do exist in the form they are typed.

Hydra's own message ("Key 'max_stepz' is not in struct", "To append ... use +trainer.max_stepz=3")
suggests adding the typo with ``+``; a user wants ``trainer.max_steps``. This module composes the
same config (group choices only) and lists the sibling keys of the unknown one, closest first.
"""

from __future__ import annotations

import difflib
from typing import Any

_MISSING = object()


def _key_of(override: str) -> str | None:
    """The dotted key of a plain ``a.b=value`` override; None for groups, +/~ edits, hydra.* and flags."""
    if "=" not in override or override.startswith(("+", "~", "-")):
        return None
    key = override.split("=", 1)[0].strip()
    if key.startswith("hydra") or "/" in key or "." not in key:
        return None
    return key


def _group_choices(overrides: list[str]) -> list[str]:
    return [o for o in overrides if "=" in o and not o.startswith(("+", "~", "-")) and "." not in o.split("=", 1)[0]]


def unknown_key_hint(overrides: list[str], config_dir: str) -> str | None:
    """``error: unknown key 'trainer.max_stepz'; did you mean trainer.max_steps? valid: ...`` or None."""
    keys = [k for k in (_key_of(o) for o in overrides) if k]
    if not keys:
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose("config", overrides=[c.split(",", 1)[0] for c in _group_choices(overrides)])
    except (
        HydraException,
        OmegaConfBaseException,
        ValueError,
        OSError,
    ):  # the group choices themselves are wrong: Hydra's message already says so
        return None
    for key in keys:
        if OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING:
            continue
        parent = key.rsplit(".", 1)[0]
        node: Any = OmegaConf.select(cfg, parent, default=None)
        while node is None and "." in parent:
            parent = parent.rsplit(".", 1)[0]
            node = OmegaConf.select(cfg, parent, default=None)
        if not OmegaConf.is_dict(node):
            continue
        valid = [f"{parent}.{k}" for k in node]
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        guess = f"did you mean {close[0]}? " if close else ""
        return f"error: unknown key {key!r}; {guess}valid keys under {parent}: {', '.join(valid)}"
    return None


# arguments that add config directories this check does not search
ELSEWHERE = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "hydra.searchpath")


def _options(loader: Any, group: str) -> list[str]:
    """Every option of a config group, sub-folders included (``task`` → glue/cola, ..., tweets)."""
    found = list(loader.get_group_options(group))
    for sub in loader.list_groups(group):
        found += [f"{sub}/{o}" for o in _options(loader, f"{group}/{sub}")]
    return sorted(found)


def _choices(overrides: list[str]) -> list[tuple[str, str]]:
    """(group, option) for each ``group=option`` override (``hydra/launcher=joblib`` too), sweeps split
    (``task=glue/sst2,glue/rte``); sweep functions (``choice(...)``) and interpolations are left to Hydra."""
    out = []
    for override in overrides:
        if "=" not in override or override.startswith(("~", "-")):
            continue
        key, value = override.split("=", 1)
        group = key.lstrip("+").split("@", 1)[0].strip()
        if "." in group or not group or any(c in value for c in "()${}[]"):
            continue
        out += [(group, option.strip()) for option in value.split(",") if option.strip()]
    return out


def _undeclared_projection(name: str) -> bool:
    """A registered projection with no ``paper`` declaration: no ``projection/<name>`` node is derived for it."""
    from lorazoo.projections import get_projection_class, projection_names

    return name in projection_names() and get_projection_class(name).paper is None


def check_group_choices(overrides: list[str], config_dir: str) -> str | None:
    """``error: task=glue/nope is not an option of group task; valid: glue/cola, ...`` for an option no config
    file or stored config provides, optional groups (``experiment``) included, which Hydra would otherwise
    skip silently (``group=null`` too, a traceback in Hydra); None when every choice exists."""
    choices = _choices(overrides)
    if not choices or any(o.lstrip("+").startswith(ELSEWHERE) for o in overrides):
        return None  # configs from elsewhere too: Hydra's own check, which sees them
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for group, option in choices:
            parent, _, leaf = group.rpartition("/")
            if leaf not in loader.list_groups(parent):
                continue  # not a group: Hydra names the key
            valid = _options(loader, group)
            if group == "projection" and option not in valid and _undeclared_projection(option):
                return (
                    f"error: projection={option} is registered but declares no paper = PaperSettings(rank=..., lr=..., "
                    f"source=...), from which projection={option} is derived; add it to its file (or write "
                    f"configs/projection/{option}.yaml)"
                )
            if option not in valid:
                close = difflib.get_close_matches(option, valid, n=1, cutoff=0.6)
                guess = f"did you mean {group}={close[0]}? " if close else ""
                return f"error: {group}={option} is not an option of group {group}; {guess}valid: {', '.join(valid)}"
    return None
