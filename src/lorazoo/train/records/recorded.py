"""What of a config may be written down: an ``${oc.env:...}`` value stays its interpolation text.

Environment variables are where secrets live (WANDB_API_KEY, HF_TOKEN). The run uses resolved values, but
every record it writes (metrics.json, lorazoo_run.json, W&B's config, names and summary) takes config values
from ``recorded`` — every other interpolation resolved, ``${oc.env:NAME}`` kept as text — and passes through
a ``Redactor``, which puts that text back wherever a resolved value was copied into a string (a path in an
error message, the model source). The run fingerprint still hashes the resolved values, so a changed
variable is still a different run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lorazoo.train.records.config_diff import flatten

_NO_DEFAULT = object()
MIN_SUBSTRING = 6  # shorter values are replaced only where they are a whole string ("1" inside "10" is no secret)


def _as_text(key: str, default: Any = _NO_DEFAULT) -> str:
    if default is _NO_DEFAULT:
        return f"${{oc.env:{key}}}"
    return f"${{oc.env:{key},{'null' if default is None else default}}}"


@contextlib.contextmanager
def _env_as_text() -> Iterator[None]:
    """``oc.env`` answers with its own interpolation text for the duration (a single-threaded setup step)."""
    from omegaconf.resolvers import oc

    OmegaConf.register_new_resolver("oc.env", _as_text, replace=True)
    try:
        yield
    finally:
        OmegaConf.register_new_resolver("oc.env", oc.env, replace=True)


def recorded(cfg: DictConfig) -> dict[str, Any]:
    """The plain config as a record may hold it: resolved, except ``${oc.env:...}`` (left as written where a
    key cannot be resolved at all)."""
    with _env_as_text():
        try:
            plain = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException:
            plain = OmegaConf.to_container(cfg, resolve=False)
    return cast("dict[str, Any]", plain) if isinstance(plain, dict) else {}


class Redactor:
    """Replaces every resolved ``${oc.env:...}`` value found in a record by its interpolation text."""

    def __init__(self, resolved: dict[str, Any], shown: dict[str, Any]):
        flat_resolved, flat_shown = flatten(resolved), flatten(shown)
        pairs = {
            str(flat_resolved[k]): str(text)
            for k, text in flat_shown.items()
            if "${oc.env:" in str(text) and k in flat_resolved and flat_resolved[k] not in (None, "")
        }
        self.pairs = sorted(pairs.items(), key=lambda p: -len(p[0]))  # the longest value first

    @classmethod
    def of(cls, cfg: DictConfig) -> Redactor:
        """From a config whose interpolations may not all resolve (a failed run's): what does resolve."""
        shown = recorded(cfg)
        try:
            resolved = cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True))
        except OmegaConfBaseException:
            resolved = {}
            for key in flatten(shown):
                with contextlib.suppress(OmegaConfBaseException):
                    resolved[key] = OmegaConf.select(cfg, key)
            return cls(_nest(resolved), shown)
        return cls(resolved, shown)

    def __call__(self, value: Any) -> Any:
        if not self.pairs:
            return value
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self(v) for v in value)
        if isinstance(value, str):
            for secret, text in self.pairs:
                if value == secret:
                    return text
                if len(secret) >= MIN_SUBSTRING:
                    value = value.replace(secret, text)
        return value


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out
