"""Save, load and export adapters. safetensors only; JSON configs are data, never code.

An adapter directory holds ``adapter_config.json`` (the AdapterConfig, the layout it was trained on, a
format tag) and ``adapter.safetensors`` (projection tensors + saved head modules). Files are written to
a temporary name and renamed, so a crash leaves either the old adapter or the new one, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .version import __version__
from .config import AdapterConfig
from .errors import AdapterFileError, ConfigError, LayoutMismatchError
from .layout import Layout
from .projections import get_projection_class

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter.safetensors"
FORMAT = "lorazoo-adapter"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"


# ----------------------------------------------------------------------------- atomic writes
def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")

    return atomic_write(path, write)


def atomic_save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata=metadata))


# ----------------------------------------------------------------------------- lorazoo format
def save_adapter(model, path: str | Path) -> Path:
    """Write the active adapter: weights first, config last (the config's presence marks completeness)."""
    path = Path(path)
    config: AdapterConfig = model.adapter_config
    atomic_save_safetensors(path / WEIGHTS_NAME, model.adapter_tensors(), metadata={"format": FORMAT})
    atomic_write_json(
        path / CONFIG_NAME,
        {
            "format": FORMAT,
            "lorazoo_version": __version__,
            "config": config.to_dict(),
            "layout": model.layout.to_list(),
            "num_parameters": model.num_parameters(),
            # how to rebuild the base for export/serving: a transformers class name and its label count
            "base_model_class": type(model.base_model).__name__,
            "num_labels": getattr(getattr(model.base_model, "config", None), "num_labels", None),
        },
    )
    return path


def _refuse_code(node: Any, where: str) -> None:
    """adapter_config.json is data: any ``_target_`` (Hydra instantiate) key is refused outright."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("_target_", "_partial_", "_args_"):
                raise AdapterFileError(f"{where} contains {key!r}: adapter configs are data and may not name code to run")
            _refuse_code(value, where)
    elif isinstance(node, list):
        for value in node:
            _refuse_code(value, where)


def read_adapter_config(path: str | Path) -> tuple[AdapterConfig, Layout]:
    path = Path(path)
    config_path = path / CONFIG_NAME
    if not path.is_dir():
        raise AdapterFileError(f"adapter directory {str(path)!r} does not exist")
    if not config_path.is_file():
        present = sorted(p.name for p in path.iterdir())
        raise AdapterFileError(f"{str(config_path)!r} is missing; an adapter directory holds {CONFIG_NAME} and {WEIGHTS_NAME} (found {present})")
    try:
        raw = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterFileError(f"{str(config_path)!r} is not valid JSON ({exc})") from None
    _refuse_code(raw, str(config_path))
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or "config" not in raw or "layout" not in raw:
        raise AdapterFileError(f"{str(config_path)!r} is not a lorazoo adapter config (expected format={FORMAT!r} with config and layout)")
    try:
        config = AdapterConfig.from_dict(raw["config"])
        get_projection_class(config.projection)
        layout = Layout.from_list(raw["layout"])
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise AdapterFileError(f"{str(config_path)!r} has an invalid config or layout: {exc}") from None
    return config, layout


def read_adapter_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    weights_path = Path(path) / WEIGHTS_NAME
    if not weights_path.is_file():
        raise AdapterFileError(f"{str(weights_path)!r} is missing; save_adapter writes it next to {CONFIG_NAME}")
    try:
        return load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterFileError(f"{str(weights_path)!r} is truncated or corrupt ({exc}); re-save or re-download it") from None


def check_layout(saved: Layout, base_model: torch.nn.Module, config: AdapterConfig) -> None:
    """The base must expose the same adapted modules with the same shapes; name the first difference."""
    from .errors import TargetModulesError

    try:
        current = Layout.from_model(base_model, config.target_modules, config.rank)
    except TargetModulesError as exc:
        raise LayoutMismatchError(f"adapter does not fit this base model: {exc}") from None
    if current == saved:
        return
    current_by_name = {e.name: e for e in current}
    for entry in saved:
        other = current_by_name.get(entry.name)
        if other is None:
            raise LayoutMismatchError(f"adapter module {entry.name!r} does not exist in this base model (it has {len(current)} matching modules)")
        if other.shape_signature != entry.shape_signature:
            raise LayoutMismatchError(
                f"module {entry.name!r}: adapter has in={entry.in_features}, out={entry.out_features}, rank={entry.rank}; "
                f"base has in={other.in_features}, out={other.out_features}"
            )
    extra = [e.name for e in current if e.name not in {s.name for s in saved}]
    raise LayoutMismatchError(f"base model has adapted module(s) the adapter lacks, e.g. {extra[:3]}; it was made for another model")


def read_adapter(path: str | Path, base_model: torch.nn.Module) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    config, layout = read_adapter_config(path)
    check_layout(layout, base_model, config)
    return config, read_adapter_tensors(path)


def split_adapter_tensors(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Separate ``projection.*`` tensors from ``modules_to_save.<module>/<param>`` ones."""
    projection, modules = {}, {}
    for key, value in tensors.items():
        if key.startswith("projection."):
            projection[key[len("projection."):]] = value
        elif key.startswith("modules_to_save."):
            module_name, _, param = key[len("modules_to_save."):].partition("/")
            modules.setdefault(module_name, {})[param] = value
        else:
            raise AdapterFileError(f"unexpected tensor {key!r} in adapter file; keys start with 'projection.' or 'modules_to_save.'")
    return projection, modules


def load_adapter(base_model: torch.nn.Module, path: str | Path, adapter_name: str = "default"):
    """Attach the adapter saved at ``path`` to ``base_model`` (checked to have the same layout)."""
    from .model import AdaptedModel, _load_tensors

    config, tensors = read_adapter(path, base_model)
    model = AdaptedModel(base_model, config, adapter_name)
    try:
        _load_tensors(model, adapter_name, model.projection, tensors)
    except ValueError as exc:
        raise AdapterFileError(f"{str(Path(path) / WEIGHTS_NAME)!r} does not match its config: {exc}") from None
    return model


# ----------------------------------------------------------------------------- PEFT export
def export_peft_lora(model, path: str | Path) -> Path:
    """Write the active adapter as a plain PEFT LoRA adapter (rank r, alpha = r, scale folded into B)."""
    path = Path(path)
    config: AdapterConfig = model.adapter_config
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, (a, b_scaled) in model.lora_factors().items():
            tensors[f"base_model.model.{name}.lora_A.weight"] = a.float()
            tensors[f"base_model.model.{name}.lora_B.weight"] = b_scaled.float()
    saved_modules = []
    _, heads = split_adapter_tensors(model.adapter_tensors())
    for module_name, state in heads.items():
        for param, value in state.items():
            tensors[f"base_model.model.{module_name}.{param}"] = value
        saved_modules.append(module_name)
    atomic_save_safetensors(path / PEFT_WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    peft_config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": config.base_model_name_or_path,
        "r": config.rank,
        "lora_alpha": config.rank,
        "lora_dropout": 0.0,
        "target_modules": [e.name for e in model.layout],
        "modules_to_save": sorted(set(saved_modules)) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    }
    atomic_write_json(path / "adapter_config.json", peft_config)
    return path
