"""``trainer.init_adapter=<dir>``: start training from a saved adapter's projection weights.

The LoRA authors start MRPC, RTE and STS-B from the MNLI-trained LoRA weights (``--lora_path`` loaded with
``strict=False``: the LoRA matrices only, the classification head fresh; microsoft/LoRA@c4593f0:
examples/NLU/roberta_base_mrpc.sh and examples/text-classification/run_glue.py). This does the same: θ
comes from the saved adapter, the head is initialised as usual. The adapter's random structure (VeRA's
shared A/B, Uni-LoRA's index map, ...) is regenerated from the *saved* adapter's seed, so the loaded θ means
what it meant when it was trained; the run's own seed still drives data order, dropout and the head.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lorazoo.config import AdapterConfig
from lorazoo.files import read_adapter_config
from lorazoo.train.errors import ConfigError

# fields that may differ between the saved adapter and this run's adapter
_FREE = ("seed", "modules_to_save", "base_model_name_or_path")


def read_init_config(path: str | Path) -> AdapterConfig:
    """The saved adapter's config (its files are checked by the io layer: missing/corrupt → AdapterFileError)."""
    if not Path(path).is_dir():
        raise ConfigError(
            f"trainer.init_adapter={str(path)!r} is not a directory; give a saved adapter dir "
            "(a run's <run dir>/adapter)"
        )
    return read_adapter_config(path)[0]


def check_compatible(saved: AdapterConfig, wanted: AdapterConfig, path: str | Path) -> None:
    """This run's adapter must be the saved one's method and shape: name the first field that differs."""
    for f in dataclasses.fields(AdapterConfig):
        if f.name in _FREE:
            continue
        a, b = getattr(saved, f.name), getattr(wanted, f.name)
        if a != b:
            raise ConfigError(
                f"trainer.init_adapter={str(path)!r} has {f.name}={a!r} but this run has {f.name}={b!r}; "
                "start from an adapter of the same projection settings"
            )


def load_projection_weights(model: Any, path: str | Path) -> None:
    """Copy the saved projection tensors (not the heads) into ``model``'s active adapter."""
    model.load_adapter_weights(path, heads=False)
