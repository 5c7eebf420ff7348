"""Fit a projection's paper defaults to the model they run on, before any weights are loaded.

The projection yamls hold the papers' GLUE settings for RoBERTa-base (hidden 768, query+value). Some of
those values cannot work, or cost far more than intended, on a smaller model. A value still at its yaml
default (and not given on the command line) is scaled by the rules below; each change is printed as one
line and recorded in metrics.json (``fitted_to_model``). A value set anywhere else (command line,
experiment, task_overrides, the caller's config) is kept, or — when it cannot work — is a ConfigError
naming the key and a value that works. The rules leave RoBERTa-base unchanged, except gaussian's cache
cap (its streamed paper setting costs 2·D·d = 6.8e9 normal draws per step: pass d explicitly for it).

- unilora / fastfood / gaussian ``kwargs.d`` ≤ ⌊D · 23,040 / 147,456⌋: Uni-LoRA's d/D on RoBERTa-base
  (q,v, r = 4: D = 147,456; Li et al. 2025, arXiv:2506.00799). gaussian also ≤ cache_max_elements / D,
  so P is generated once rather than twice per step (each regeneration draws D·d normals).
- vblora ``kwargs.vector_length``: must divide every adapted in/out size; else the largest divisor of
  their gcd that is ≤ the default (MiniLM 384 → 192; SmolLM2 q,v 576/192 → 192).
- vera ``rank`` ≤ ⌊1024 · w / 768⌋, w = the widest adapted input: VeRA's r per unit width on RoBERTa-base
  (r = 1024 at 768; Kopiczko et al. 2024, arXiv:2310.11454, Table 1). MiniLM (384) → 512.
- randlora ``rank`` ≤ min(out, in) of every adapted module: a module gets ⌈min(out, in) / r⌉ rank-r bases, so a
  wider r only adds memory (its paper r = 64 on the tiny Llama's 16-wide k_proj → 16).
- weight-aware projections (loraxs, tinylora) ``rank`` ≤ min(out, in) of every adapted weight: their factors
  are its truncated SVD (LoRA-XS's r = 64 on the tiny Llama's 16-wide k_proj → 16).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorazoo.errors import LoraZooError
from lorazoo.layout import Layout
from lorazoo.projections import get_projection_class
from lorazoo.targets import layout_from_model
from lorazoo.train.config.store import projection_node
from lorazoo.train.errors import ConfigError
from lorazoo.train.options import ModelOptions, ProjectionOptions

D_PER_D = 23040 / 147456  # Uni-LoRA GLUE: d / D on RoBERTa-base q,v r=4
VERA_RANK_PER_WIDTH = 1024 / 768  # VeRA GLUE: r = 1024 on RoBERTa-base (hidden 768)
SUBSPACE = ("unilora", "fastfood", "gaussian")


@dataclass(frozen=True)
class Change:
    key: str  # the command-line spelling: projection.kwargs.d
    old: Any
    new: Any
    why: str

    def line(self, model: str) -> str:
        return (
            f"[lorazoo] {self.key}: {self.old} → {self.new} to fit model {model} ({self.why}); "
            f"set {self.key}=<value> to choose yourself"
        )


def explicit_keys(overrides: list[str]) -> set[str]:
    """Dotted keys given on the command line (``++projection.kwargs.d=4`` → ``projection.kwargs.d``); a group
    choice (``projection=vblora``) picks a yaml, it sets none of its values."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    return {k for k in keys if "." in k}


def _is_explicit(key: str, explicit: set[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in explicit)


def yaml_defaults(name: str) -> dict[str, Any] | None:
    """The ``projection:`` node of configs/projection/<name>.yaml, else the one derived from the projection's
    ``paper`` declaration (None when it has neither)."""
    import yaml

    from lorazoo.counting import model_config_dirs

    for folder in model_config_dirs():
        path = folder.parent / "projection" / f"{name}.yaml"
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            node = data.get("projection", data) if isinstance(data, dict) else {}
            return node if isinstance(node, dict) else {}
    paper = get_projection_class(name).paper  # no yaml: projection=<name> is derived from the declaration
    return None if paper is None else projection_node(name, paper)["projection"]


def set_elsewhere(opts: ProjectionOptions) -> set[str]:
    """Keys whose value differs from the projection yaml's (an experiment, task_overrides or the caller set
    them): those are the user's choice, not a paper default to scale."""
    node = yaml_defaults(opts.name)
    if node is None:
        return set()
    out = {f"projection.{k}" for k in ("rank",) if k in node and node[k] != getattr(opts, k)}
    # the paper defaults: the projection's Options dataclass, with the values its yaml writes on top
    given = {**get_projection_class(opts.name).defaults, **(node.get("kwargs") or {})}
    out |= {f"projection.kwargs.{k}" for k, v in opts.kwargs.items() if k not in given or given[k] != v}
    return out


def _largest_divisor(n: int, at_most: int) -> int:
    return max(k for k in range(1, min(n, at_most) + 1) if n % k == 0)


def fit_projection(
    opts: ProjectionOptions, layout: Layout, model: str, explicit: set[str]
) -> tuple[ProjectionOptions, list[Change]]:
    """``opts`` with defaults scaled to ``layout`` (see the module docstring) and the changes made."""
    kwargs = {**get_projection_class(opts.name).defaults, **opts.kwargs}
    explicit = set(explicit) | set_elsewhere(opts)
    changes: list[Change] = []
    rank = opts.rank
    if opts.name in SUBSPACE and isinstance(kwargs.get("d"), int) and layout.D > 0:
        d, D = kwargs["d"], layout.D
        limit, why = max(1, math.floor(D * D_PER_D)), f"Uni-LoRA's d/D = 0.15625 of D = {D:,}"
        if opts.name == "gaussian":
            cache = int(kwargs.get("cache_max_elements") or 0)
            if cache and cache // D < limit:
                limit, why = max(1, cache // D), f"P of D·d entries within cache_max_elements={cache:,} (D = {D:,})"
        if opts.name == "unilora" and kwargs.get("share") == "local":
            limit = max(limit, len(layout))
        key = "projection.kwargs.d"
        if d > limit:
            if not _is_explicit(key, explicit):
                kwargs["d"] = limit
                changes.append(Change(key, d, limit, why))
            elif d > D:
                raise ConfigError(
                    f"{key}={d} exceeds D={D:,} (the LoRA factor entries of model {model}); "
                    f"a value that works: {key}={limit}"
                )
            elif opts.name == "gaussian":
                print(
                    f"[lorazoo] warning: {key}={d} regenerates P ({D * d:,} normals) twice per step; "
                    f"{key}={limit} keeps it cached",
                    file=sys.stderr,
                )
    if opts.name == "vblora":
        b, key = int(kwargs["vector_length"]), "projection.kwargs.vector_length"
        sizes = sorted({e.in_features for e in layout} | {e.out_features for e in layout})
        g = math.gcd(*sizes) if sizes else b
        if g % b:
            fit = _largest_divisor(g, b)
            if _is_explicit(key, explicit):
                raise ConfigError(
                    f"{key}={b} does not divide every adapted size of model {model} {sizes}; "
                    f"a value that works: {key}={fit} (any divisor of {g})"
                )
            kwargs["vector_length"] = fit
            changes.append(Change(key, b, fit, f"the largest divisor ≤ {b} of every adapted size {sizes}"))
    if opts.name == "vera" and len(layout):
        width = max(e.in_features for e in layout)
        cap, key = max(1, math.floor(VERA_RANK_PER_WIDTH * width)), "projection.rank"
        if rank > cap and not _is_explicit(key, explicit):
            changes.append(Change(key, rank, cap, f"VeRA's r/width = 4/3 at width {width}"))
            rank = cap
    if get_projection_class(opts.name).reads_base_weights and len(layout):
        cap, key = min(min(e.in_features, e.out_features) for e in layout), "projection.rank"
        if rank > cap and not _is_explicit(key, explicit):
            changes.append(Change(key, rank, cap, f"a truncated SVD of a {cap}-wide adapted weight has {cap} triplets"))
            rank = cap
    if opts.name == "randlora" and len(layout):
        cap, key = min(min(e.in_features, e.out_features) for e in layout), "projection.rank"
        if rank > cap and not _is_explicit(key, explicit):
            changes.append(Change(key, rank, cap, f"a RandLoRA basis wider than the {cap}-wide side adds no rank"))
            rank = cap
    if not changes:
        return opts, []
    return dataclasses.replace(opts, rank=rank, kwargs=kwargs), changes


def meta_layout(model: ModelOptions, opts: ProjectionOptions, num_labels: int) -> Layout | None:
    """The adapted layout from the model's config alone (meta device, no weights); None when unknown."""
    from lorazoo.counting import meta_model
    from lorazoo.train.loading.base_model import resolve_source
    from lorazoo.train.loading.tiny import TINY_CONFIGS, tiny_fields

    fields: dict[str, Any] | None = None
    if model.pretrained.startswith("tiny:"):
        kind = model.pretrained.split(":", 1)[1]
        if kind in TINY_CONFIGS:
            fields = {"model_type": kind, "vocab_size": 128, **tiny_fields(kind, **model.dims)}
    elif model.dims.get("model_type"):
        fields = dict(model.dims)
    if fields is None:
        try:
            source = Path(resolve_source(model.pretrained, model.gguf_file))
        except LoraZooError:
            return None
        if not (source / "config.json").is_file():
            return None
        from transformers import AutoConfig

        config: Any = AutoConfig.from_pretrained(str(source), trust_remote_code=False)
    else:
        from transformers import AutoConfig

        fields = dict(fields)
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    if model.task_type == "seq_cls":
        config.num_labels = max(1, num_labels)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    base, _ = meta_model(config, model.task_type)
    targets = opts.target_modules if opts.target_modules else model.target_modules
    factor_rank = get_projection_class(opts.name).factor_rank  # per module for randlora
    return layout_from_model(base, targets, lambda i, o: factor_rank(i, o, opts.rank), model.modules_to_save)
