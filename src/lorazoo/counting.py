"""Parameter counts of an adapter without loading any weights.

The base model is built on the meta device (shapes only, no memory), the layout is read from it,
and the projection is built on CPU from the layout alone — projections keep their O(D) or O(D·d)
structures lazy, so only θ_d-sized tensors are allocated. This reproduces papers' parameter columns
for 7B models in seconds on a laptop.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorazoo.config import AdapterConfig
from lorazoo.errors import ConfigError
from lorazoo.projections import build_projection, layout_rank
from lorazoo.targets import layout_from_model

KNOWN_MODELS = ("gemma-7b", "llama-2-7b", "minilm", "mistral-7b", "roberta-base", "roberta-large", "smollm2-135m")
TASK_TYPES = ("seq_cls", "causal_lm", "base")


def model_config_dirs() -> list[Path]:
    """Where configs/model may be: the repo checkout around the package (src layout), then the cwd."""
    package_root = Path(__file__).resolve().parents[2]
    return [package_root / "configs" / "model", Path.cwd() / "configs" / "model"]


def known_model_names() -> list[str]:
    names = {p.stem for folder in model_config_dirs() if folder.is_dir() for p in folder.glob("*.yaml")}
    return sorted(names)


def load_model_spec(name: str) -> dict[str, Any]:
    """The parsed configs/model/<name>.yaml (needs its ``dims``: transformers config fields)."""
    import yaml

    for folder in model_config_dirs():
        path = folder / f"{name}.yaml"
        if path.is_file():
            spec = yaml.safe_load(path.read_text()) or {}
            if not isinstance(spec.get("dims"), dict) or "model_type" not in spec["dims"]:
                raise ConfigError(f"{path} has no dims.model_type; add transformers config fields under dims")
            return spec
    known = known_model_names() or list(KNOWN_MODELS)
    searched = ", ".join(str(f) for f in model_config_dirs())
    raise ConfigError(
        f"unknown model {name!r}; known: {known} (looked in {searched}); or pass a transformers config or a dict of its fields"
    )


def _transformers_config(model_config: Any) -> tuple[Any, str, str]:
    """(PretrainedConfig, task type, display name) from a config, a known name, or a dict of fields."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model_config, PretrainedConfig):
        return (
            model_config,
            _guess_task_type(model_config),
            getattr(model_config, "name_or_path", "") or model_config.model_type,
        )
    if isinstance(model_config, str):
        spec = load_model_spec(model_config)
        fields = dict(spec["dims"])
        return AutoConfig.for_model(fields.pop("model_type"), **fields), spec.get("task_type", "base"), model_config
    if isinstance(model_config, Mapping):
        fields = dict(model_config)
        if "model_type" not in fields:
            raise ConfigError(f"model config dict needs a 'model_type' key, got keys {sorted(fields)}")
        task_type = fields.pop("task_type", "base")
        model_type = fields.pop("model_type")
        return AutoConfig.for_model(model_type, **fields), task_type, model_type
    raise ConfigError(
        f"model_config must be a transformers PretrainedConfig, a dict of its fields or a known name {list(KNOWN_MODELS)}, got {type(model_config).__name__}"
    )


def _guess_task_type(config: Any) -> str:
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "ForCausalLM" in archs:
        return "causal_lm"
    if "ForSequenceClassification" in archs:
        return "seq_cls"
    return "base"


def meta_model(model_config: Any, task_type: str | None = None) -> tuple[nn.Module, str]:
    """The model with its head, on the meta device (no weights allocated), and its display name."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    config, default_task, name = _transformers_config(model_config)
    task_type = task_type or default_task
    classes = {"seq_cls": AutoModelForSequenceClassification, "causal_lm": AutoModelForCausalLM, "base": AutoModel}
    if task_type not in classes:
        raise ConfigError(f"task_type={task_type!r} is invalid; valid: {list(TASK_TYPES)}")
    with torch.device("meta"):
        model = classes[task_type].from_config(config)
    return model, name


def count_parameters(model_config: Any, cfg: AdapterConfig, task_type: str | None = None) -> dict[str, Any]:
    """Trainable numel, D, stored numel and the adapted modules of ``cfg`` on a model, without weights.

    ``model_config``: a transformers PretrainedConfig, a known model name (configs/model/<name>.yaml),
    or a dict of config fields with ``model_type`` (and optionally ``task_type``). ``modules_to_save``
    is the numel of the fully trained modules (e.g. a classifier head), reported separately because
    papers differ on whether they count it.
    """
    model, name = meta_model(model_config, task_type)
    layout = layout_from_model(model, cfg.target_modules, layout_rank(cfg), cfg.modules_to_save)
    projection = build_projection(layout, cfg)
    return {
        "model": name,
        "projection": cfg.projection,
        "rank": cfg.rank,
        "trainable": projection.d,
        "D": layout.D,
        "stored": projection.stored_numel(),
        "num_modules": len(layout),
        "modules": sorted({e.kind for e in layout}),
        "modules_to_save": _modules_to_save_numel(model, cfg.modules_to_save),
        "base": sum(p.numel() for p in model.parameters()),
    }


def _modules_to_save_numel(model: nn.Module, patterns: list[str]) -> int:
    total = 0
    for pattern in patterns:
        names = [n for n, _ in model.named_modules() if n == pattern or n.endswith("." + pattern)]
        if names:
            total += sum(p.numel() for p in model.get_submodule(names[0]).parameters())
    return total
