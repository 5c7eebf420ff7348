"""Checks of a run's options against this machine and the model's config, before data or weights load.

Each failure is one ConfigError line naming the bad value and what is valid, so a run that cannot be
honoured stops in seconds instead of raising deep inside transformers after the model has loaded.
"""

from __future__ import annotations

import os
from typing import Any

from lorazoo.layout import Layout
from lorazoo.train.errors import ConfigError
from lorazoo.train.options import ModelOptions, ProjectionOptions, TrainerOptions

# projections whose rank is the size of a shared random basis, not of each module's factors: VeRA's paper uses
# r = 1024 on RoBERTa-base's width 768 (Kopiczko et al. 2024, arXiv:2310.11454, Table 1); memory still bounds it
WIDE_RANK = ("vera",)
MAX_LAYERS = 1024  # the deepest published transformers have ~100-200 layers; more is a typo in model.dims
FLOAT_BYTES = 4  # θ_D and activations are fp32 (adapter parameters stay fp32 under bf16 autocast too)
# models whose position ids start after the padding index (RoBERTa family): usable = max_position_embeddings - pad - 1
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xmod"}


def check_precision(trainer: TrainerOptions) -> None:
    if trainer.precision != "bf16":
        return
    from transformers.utils import is_torch_bf16_gpu_available

    if not is_torch_bf16_gpu_available():
        raise ConfigError(
            "trainer.precision=bf16 is not supported here (no CUDA device with bf16); valid: fp32, "
            "or bf16 on a GPU that supports it (model.dtype=bfloat16 still stores the base in bf16)"
        )


def model_config(model: ModelOptions) -> Any | None:
    """The base model's transformers config, read without weights (None when it is not on disk offline)."""
    from transformers import AutoConfig

    from lorazoo.train.loading.base_model import resolve_source
    from lorazoo.train.loading.tiny import TINY_CONFIGS, tiny_config

    if model.pretrained.startswith("tiny:"):
        kind = model.pretrained.split(":", 1)[1]
        if kind not in TINY_CONFIGS:
            return None  # the model loader names the valid kinds
        try:
            return tiny_config(kind, **model.dims)
        except Exception as exc:  # transformers' own validation of the fields (strict dataclasses, ...)
            raise _bad_dims(model, exc) from None
    try:
        source = resolve_source(model.pretrained, model.gguf_file)
    except Exception:  # an unavailable model is reported by the model loader itself
        return None
    if not os.path.isfile(os.path.join(source, "config.json")):
        return None  # a hub id: not fetched just for this check
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError):
        return None


def _bad_dims(model: ModelOptions, exc: BaseException) -> ConfigError:
    cause = " ".join(str(exc).split())[:160] or type(exc).__name__
    return ConfigError(
        f"model.dims={model.dims!r} does not make a model of {model.pretrained!r} ({type(exc).__name__}: {cause}); "
        "valid: positive sizes its transformers config accepts"
    )


def check_base_model(model: ModelOptions, trainer: TrainerOptions) -> None:
    """The base model built on the meta device (no memory) from its config: sizes that cannot make a model
    (``model.dims.hidden_size=0``) and a model larger than free memory are refused before any weight exists."""
    config = model_config(model)
    if config is None or model.quantization != "none":  # unknown offline; quantised sizes are the loader's
        return
    from lorazoo.counting import meta_model

    hidden, layers, vocab = _shape(config)
    if layers > MAX_LAYERS:  # even the meta-device model would take minutes to build
        raise ConfigError(
            f"model {model.name!r} has {layers:,} layers (model.dims: {model.dims}); valid: 1..{MAX_LAYERS}"
        )
    width = 2 if model.dtype == "bfloat16" else FLOAT_BYTES
    free, where = available_memory(trainer)
    need = (layers * 2 * hidden * hidden + vocab * hidden) * width  # a lower bound: q and o projections, embeddings
    if need <= free:
        try:
            base, _ = meta_model(config, model.task_type)
        except Exception as exc:  # ZeroDivisionError, shape errors ... from building the modules
            raise _bad_dims(model, exc) from None
        need = sum(p.numel() for p in base.parameters()) * width
    if need > free:
        raise ConfigError(
            f"model {model.name!r} ({model.pretrained}, dims {model.dims}) needs {_gib(need)} for its weights, more "
            f"than the {_gib(free)} of {where}; valid: a smaller model (model.dims) or model.quantization=4bit"
        )


def model_positions(model: ModelOptions, config: Any = None) -> int | None:
    """How many token positions the base model has, from its config (None when unknown offline)."""
    config = config if config is not None else model_config(model)
    if config is None:
        return None
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if positions and getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        positions -= (getattr(config, "pad_token_id", None) or 0) + 1
    return positions


def check_max_length(max_length: Any, model: ModelOptions) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
        raise ConfigError(f"task.max_length={max_length!r} is invalid; valid: a positive integer")
    positions = model_positions(model)
    if positions is not None and max_length > positions:
        raise ConfigError(
            f"task.max_length={max_length} is invalid; valid: 1..{positions} (the positions of model={model.name!r})"
        )


def available_memory(trainer: TrainerOptions) -> tuple[int, str]:
    """Bytes free where training runs: the GPU's free memory, or the machine's available RAM."""
    import torch

    if torch.cuda.is_available() and not trainer.use_cpu:
        return int(torch.cuda.mem_get_info()[0]), "free GPU memory"
    import psutil

    return int(psutil.virtual_memory().available), "available memory"


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_adapter_size(projection: ProjectionOptions, layout: Layout, model: str, trainer: TrainerOptions) -> None:
    """Refuse, before anything is allocated, a rank beyond the adapted modules' sizes (a rank-r factor of an
    m×n matrix has rank ≤ min(m, n): more adds memory, never capacity) and a D whose fp32 factors exceed memory."""
    if not len(layout):
        return
    smallest = min(min(e.in_features, e.out_features) for e in layout)
    if projection.name not in WIDE_RANK and projection.rank > smallest:
        raise ConfigError(
            f"projection.rank={projection.rank} exceeds the smallest adapted size of model {model} ({smallest}); "
            f"valid: 1..{smallest}"
        )
    free, where = available_memory(trainer)
    need = layout.D * FLOAT_BYTES
    if need > free:
        raise ConfigError(
            f"projection.rank={projection.rank} makes D={layout.D:,} LoRA factor entries ({_gib(need)} in fp32) on "
            f"model {model}, more than the {_gib(free)} of {where}; valid: a rank up to "
            f"{max(1, projection.rank * free // need):,}"
        )


def _shape(config: Any) -> tuple[int, int, int]:
    """(hidden size, layers, vocabulary) of a transformers config (0 where it does not say)."""

    def first(*names: str) -> int:
        return next((int(v) for n in names if isinstance(v := getattr(config, n, None), int)), 0)

    return first("hidden_size", "n_embd", "d_model"), first("num_hidden_layers", "n_layer"), first("vocab_size")


def check_batch_memory(trainer: TrainerOptions, max_length: int, model: ModelOptions) -> None:
    """Refuse batch sizes whose activations cannot fit, by a lower bound: training keeps every layer's hidden
    states (batch · length · hidden · layers fp32 values), and a causal LM's logits (batch · length · vocab)
    exist in training and evaluation alike."""
    config = model_config(model)
    if config is None:
        return
    hidden, layers, vocab = _shape(config)
    logits = max_length * vocab * FLOAT_BYTES if model.task_type == "causal_lm" else 0
    per_example = {
        "trainer.batch_size": (trainer.batch_size, max_length * hidden * layers * FLOAT_BYTES + logits),
        "trainer.eval_batch_size": (trainer.eval_batch_size, logits or max_length * hidden * FLOAT_BYTES),
    }
    free, where = available_memory(trainer)
    for key, (batch, each) in per_example.items():
        if each and batch * each > free:
            raise ConfigError(
                f"{key}={batch} needs at least {_gib(batch * each)} of activations at task.max_length={max_length}, "
                f"more than the {_gib(free)} of {where}; valid: 1..{max(1, free // each):,}"
            )
