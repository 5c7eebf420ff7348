"""AdapterConfig: the plain-data description of one adapter (no Hydra dependency)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from lorazoo.errors import ConfigError


@dataclass
class AdapterConfig:
    """What to adapt and how.

    ``modules_to_save`` names modules (a task head such as ``classifier``) trained in full, one copy per
    adapter, and saved with it. ``alpha`` only matters for projections whose scale is alpha / rank (lora, tied, prolora); it
    defaults to ``rank`` so that the scale is 1. ``projection_kwargs`` holds the method's own options
    (``d`` for unilora, ``num_vectors`` for vblora, ...), validated by the projection itself.
    """

    projection: str = "lora"
    rank: int = 8
    target_modules: list[str] | str = field(default_factory=lambda: ["query", "value"])
    alpha: float | None = None
    dropout: float = 0.0
    seed: int = 0
    projection_kwargs: dict[str, Any] = field(default_factory=dict)
    modules_to_save: list[str] = field(default_factory=list)
    base_model_name_or_path: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise ConfigError(f"rank must be a positive integer, got {self.rank!r}")
        if self.alpha is not None and (not _is_real(self.alpha) or self.alpha < 0):
            raise ConfigError(f"alpha must be a finite number >= 0 (or None for alpha = rank), got {self.alpha!r}")
        if not _is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = [str(t) for t in self.target_modules]
            if not self.target_modules:
                raise ConfigError("target_modules is empty; give module names, suffixes, a regex or 'all-linear'")
        elif not isinstance(self.target_modules, str) or not self.target_modules:
            raise ConfigError(f"target_modules must be a list of names or a regex string, got {self.target_modules!r}")
        self.projection_kwargs = dict(self.projection_kwargs or {})
        if isinstance(self.modules_to_save, str) or not isinstance(self.modules_to_save, (list, tuple, type(None))):
            # a bare string would be read character by character
            raise ConfigError(
                f"modules_to_save={self.modules_to_save!r} is invalid; valid: a list of module names, "
                "e.g. ['classifier']"
            )
        self.modules_to_save = [str(m) for m in (self.modules_to_save or [])]

    @property
    def effective_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """Build from plain data (a JSON file, a Hydra node); unknown keys are an error, not ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown AdapterConfig key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**data)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
