"""What transformers' Trainer (and TRL on top of it) reads off a model, answered for the base model.

An AdaptedModel forwards to its base, so the Trainer must treat it exactly as it would the base:

* ``accepts_loss_kwargs``: the Trainer passes ``num_items_in_batch`` to a forward that takes
  ``**kwargs`` and then trusts the loss to be a sum over the whole (accumulated, all-rank) batch divided
  by it, skipping its own division by grad-accum steps and multiplying by the world size. That is only
  true when the base's loss function really divides by ``num_items_in_batch`` (token-level LM losses);
  a sequence-classification head also takes ``**kwargs`` but returns a plain batch mean, so trusting it
  scales the reported loss and the gradient by the number of processes (DDP) / accum steps.
* ``num_parameters(only_trainable=..., exclude_embeddings=...)``: transformers' signature and meaning.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, cast

from torch import nn


def accepts_loss_kwargs(base: nn.Module) -> bool:
    """Whether ``base``'s loss honours ``num_items_in_batch``: the base's own flag when it sets one,
    else (a ``**kwargs`` forward and) a transformers loss function with that parameter."""
    explicit = getattr(type(base), "accepts_loss_kwargs", None)
    if isinstance(explicit, bool):
        return explicit
    forward = inspect.signature(base.forward).parameters.values()
    if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in forward):
        return False
    loss_type = getattr(base, "loss_type", None)
    try:
        from transformers.loss.loss_utils import LOSS_MAPPING
    except ImportError:
        return False
    loss = LOSS_MAPPING.get(loss_type) if isinstance(loss_type, str) else None
    # no known loss: a plain mean is the safe reading (the Trainer then averages per batch, which is exact)
    return loss is not None and "num_items_in_batch" in inspect.signature(cast(Callable[..., Any], loss)).parameters


def count_parameters_like_transformers(model: nn.Module, only_trainable: bool, exclude_embeddings: bool) -> int:
    """transformers' ``PreTrainedModel.num_parameters`` over all of ``model`` (base + adapters)."""
    from transformers import PreTrainedModel

    counter: Any = PreTrainedModel.num_parameters
    return int(counter(model, only_trainable=only_trainable, exclude_embeddings=exclude_embeddings))
