"""Adapter files: pure serialization of (config, layout, tensors). safetensors only; JSON is data, never code.

An adapter directory holds ``adapter_config.json`` (the AdapterConfig, the layout it was trained on, a
format tag) and ``adapter.safetensors`` (projection tensors + saved head modules). Files are written to
a temporary name and renamed, so a crash leaves either the old adapter or the new one, never half.
This module knows files, not models: putting what it reads into a model is model.py's job, so the
lifecycle calls the serializer and never the other way round.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lorazoo import jsonsafe
from lorazoo.config import AdapterConfig
from lorazoo.errors import AdapterFileError, ConfigError
from lorazoo.layout import Layout
from lorazoo.projections import get_projection_class
from lorazoo.version import __version__

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter.safetensors"
FORMAT = "lorazoo-adapter"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
RUN_FILE = "lorazoo_run.json"  # the record that makes a directory a lorazoo run dir (train/run_dir.py)


# ----------------------------------------------------------------------------- atomic writes
def current_umask() -> int:
    """The process umask (read by setting and restoring it: POSIX has no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


SCRATCH_SUFFIX = ".tmp"  # atomic_write's scratch files: ".<name>.<random>.tmp" beside the target


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=SCRATCH_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; the file should look like open()'s
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def leftover_scratch(directory: Path) -> list[Path]:
    """atomic_write scratch files under ``directory``: only a process killed between write and rename leaves
    one (its target file is intact). Whoever owns the directory may delete them."""
    found = directory.rglob(f".*{SCRATCH_SUFFIX}")
    return sorted(p for p in found if p.is_file() and not p.is_symlink())


def atomic_write_json(path: str | Path, data: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")

    return atomic_write(path, write)


def atomic_save_png(path: str | Path, figure: Any) -> Path:
    """A matplotlib figure written atomically as PNG, then closed (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    finally:
        plt.close(figure)


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks (data files and artifacts can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_save_safetensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata=metadata))


# ----------------------------------------------------------------------------- lorazoo format
def write_adapter(
    path: str | Path,
    config: AdapterConfig,
    layout: Layout,
    tensors: Mapping[str, torch.Tensor],
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write one adapter: weights first, config last (the config's presence marks completeness).

    ``info`` adds descriptive keys to adapter_config.json (parameter counts, the base class) that
    readers may show but never need.
    """
    path = Path(path)
    atomic_save_safetensors(path / WEIGHTS_NAME, dict(tensors), metadata={"format": FORMAT})
    atomic_write_json(
        path / CONFIG_NAME,
        {
            "format": FORMAT,
            "lorazoo_version": __version__,
            "config": config.to_dict(),
            "layout": layout.to_list(),
            **dict(info or {}),
        },
    )
    return path


def _refuse_code(node: Any, where: str) -> None:
    """adapter_config.json is data: any ``_target_`` (Hydra instantiate) key is refused outright."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("_target_", "_partial_", "_args_"):
                raise AdapterFileError(
                    f"{where} contains {key!r}: adapter configs are data and may not name code to run"
                )
            _refuse_code(value, where)
    elif isinstance(node, list):
        for value in node:
            _refuse_code(value, where)


def read_adapter_config(path: str | Path) -> tuple[AdapterConfig, Layout]:
    """The config and layout of the adapter at ``path`` (no tensors read)."""
    path = Path(path)
    config_path = path / CONFIG_NAME
    if not path.is_dir():
        raise AdapterFileError(f"adapter directory {str(path)!r} does not exist")
    if not config_path.is_file():
        present = sorted(p.name for p in path.iterdir())
        raise AdapterFileError(
            f"{str(config_path)!r} is missing; an adapter directory holds {CONFIG_NAME} and {WEIGHTS_NAME} (found {present})"
        )
    try:
        text = config_path.read_text()
    except UnicodeDecodeError as exc:
        raise AdapterFileError(f"{str(config_path)!r} is not valid JSON ({exc})") from None
    raw = jsonsafe.loads(text, str(config_path), AdapterFileError)
    _refuse_code(raw, str(config_path))
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or "config" not in raw or "layout" not in raw:
        raise AdapterFileError(
            f"{str(config_path)!r} is not a lorazoo adapter config (expected format={FORMAT!r} with config and layout)"
        )
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
        raise AdapterFileError(
            f"{str(weights_path)!r} is truncated or corrupt ({exc}); re-save or re-download it"
        ) from None


def read_tensor_header(path: str | Path) -> dict[str, tuple[str, list[int]]]:
    """{key: (dtype, shape)} of adapter.safetensors from its header alone: no tensor data is read.

    The header is parsed here, not by safetensors, so that its length is bounded before it is read and every
    entry's byte range is checked against the file's size: a header declaring a 1 GiB tensor in a 4 KB file
    (or a sparse one) fails here, before anything of that size exists."""
    weights_path = Path(path) / WEIGHTS_NAME
    where = str(weights_path)
    if not weights_path.is_file():
        raise AdapterFileError(f"{where!r} is missing; save_adapter writes it next to {CONFIG_NAME}")
    try:
        with open(weights_path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            length = int.from_bytes(fh.read(8).ljust(8, b"\xff"), "little")
            if size < 8 or length > min(MAX_HEADER_BYTES, size - 8):
                raise AdapterFileError(
                    f"{where!r} declares a {length}-byte header in a {size}-byte file; valid: at most "
                    f"{MAX_HEADER_BYTES} bytes within the file (it is truncated or not a safetensors file)"
                )
            text = fh.read(length).decode("utf-8", errors="replace")
    except OSError as exc:
        raise AdapterFileError(f"{where!r} cannot be read ({exc}); re-save or re-download it") from None
    raw = jsonsafe.loads(text, where, AdapterFileError)
    if not isinstance(raw, dict):
        raise AdapterFileError(f"{where!r}: the safetensors header is not a JSON object; re-save or re-download it")
    data_bytes = size - 8 - length
    return {key: _header_entry(key, entry, data_bytes, where) for key, entry in raw.items() if key != "__metadata__"}


MAX_HEADER_BYTES = 16 * 1024 * 1024  # an adapter's header is a few KB; safetensors itself allows 100 MB


def _header_entry(key: str, entry: Any, data_bytes: int, where: str) -> tuple[str, list[int]]:
    """One header entry as (torch dtype name, shape), after checking that its byte range lies inside the file."""
    entry = entry if isinstance(entry, dict) else {}
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not (
        dtype in _ITEMSIZE
        and isinstance(shape, list)
        and all(type(n) is int and n >= 0 for n in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(type(n) is int for n in offsets)
    ):
        raise AdapterFileError(
            f"{where!r}: tensor {key!r} has a malformed header entry; valid: dtype in {sorted(_ITEMSIZE)}, a shape "
            "of non-negative integers and two data_offsets (re-save or re-download it)"
        )
    begin, end = offsets
    nbytes = math.prod(shape) * _ITEMSIZE[dtype]
    if not 0 <= begin <= end <= data_bytes or end - begin != nbytes:
        raise AdapterFileError(
            f"{where!r}: tensor {key!r} declares {dtype}{shape} ({nbytes} bytes at {begin}..{end}) but the "
            f"file holds {data_bytes} data bytes; it is truncated or forged (re-save or re-download it)"
        )
    return _DTYPES[dtype], list(shape)


# safetensors dtype names → torch's
_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def read_checksums(path: str | Path) -> dict[str, Any] | None:
    """The integrity record (``checksums``) of adapter_config.json; None only for a file marked hand-written.

    Without the record an edited seed, alpha or option would load silently as another ΔW, so a lorazoo adapter
    that lacks it is refused; ``"hand_written": true`` is the explicit opt-out for files written by hand."""
    config_path = Path(path) / CONFIG_NAME
    raw = json.loads(config_path.read_text())
    block = raw.get("checksums") if isinstance(raw, dict) else None
    if isinstance(block, dict):
        for key, value in (block.get("info") or {}).items():  # the keys written beside the config
            if raw.get(key) != value:
                raise AdapterFileError(
                    f"{str(config_path)!r}: {key} was saved as {value!r} but the file now says {raw.get(key)!r}; "
                    "the file was edited: restore it or re-save the adapter"
                )
        return block
    if isinstance(raw, dict) and raw.get(HAND_WRITTEN) is True:
        return None
    raise AdapterFileError(
        f"{str(config_path)!r} has no integrity record ('checksums'), so an edited seed, alpha or option would load "
        f'unnoticed; re-save the adapter with save_adapter, or add "{HAND_WRITTEN}": true to load a hand-written '
        "file unverified"
    )


HAND_WRITTEN = "hand_written"  # adapter_config.json key: load without the integrity record (files written by hand)


def refuse_export_over_adapter(path: str | Path) -> None:
    """An export may not land in a lorazoo adapter dir (its adapter_config.json would be overwritten by PEFT's),
    a run dir or a run dir's adapter/ (even one deleted): those hold results that must not change."""
    path = Path(path)
    config = path / CONFIG_NAME
    holds_adapter = (path / WEIGHTS_NAME).exists() or (config.is_file() and f'"{FORMAT}"' in _head(config))
    is_run = (path / RUN_FILE).exists() or (path.name == "adapter" and (path.parent / RUN_FILE).exists())
    if holds_adapter or is_run:
        what = "a lorazoo adapter dir" if holds_adapter else "a lorazoo run dir (or its adapter/)"
        raise AdapterFileError(
            f"export target {str(path)!r} is {what}; exporting would overwrite or add to it; valid: a new "
            "directory (or an earlier PEFT export)"
        )


def _head(path: Path) -> str:
    with open(path, "rb") as fh:
        return fh.read(4096).decode(errors="replace")


# ----------------------------------------------------------------------------- PEFT format
def write_peft_lora(
    path: str | Path,
    config: AdapterConfig,
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    saved_modules: Mapping[str, Mapping[str, torch.Tensor]],
    factor_keys: Mapping[str, tuple[str, str]] | None = None,
    fan_in_fan_out: bool = False,
    task_type: str | None = None,
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write a plain PEFT LoRA adapter from exact (A_l, s · B_l) factors: rank r, alpha = r (scale folded into B).

    ``factor_keys`` names each module's two tensors as PEFT does (``lora_A.weight``/``lora_B.weight``,
    embeddings ``lora_embedding_A``/``lora_embedding_B``); ``fan_in_fan_out`` is PEFT's flag for
    GPT-2-style Conv1D layers (PEFT resets it per layer for any plain Linear beside them). ``task_type``
    (PEFT's, e.g. CAUSAL_LM) and a loadable ``base_model_name_or_path`` let PEFT's auto classes rebuild
    the model from the export alone; the base defaults to the adapter config's.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, (a, b_scaled) in factors.items():
        key_a, key_b = (factor_keys or {}).get(name, ("lora_A.weight", "lora_B.weight"))
        tensors[f"base_model.model.{name}.{key_a}"] = a.detach().float()
        tensors[f"base_model.model.{name}.{key_b}"] = b_scaled.detach().float()
    for module_name, state in saved_modules.items():
        for param, value in state.items():
            tensors[f"base_model.model.{module_name}.{param}"] = value
    atomic_save_safetensors(path / PEFT_WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    rank, per_module = _export_ranks(factors, config.rank)
    peft_config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path or config.base_model_name_or_path,
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "target_modules": list(factors),
        "modules_to_save": sorted(saved_modules) or None,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "init_lora_weights": True,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    }
    if per_module:  # factors whose rank depends on the module (RandLoRA): alpha = rank keeps each scale 1
        peft_config |= {"rank_pattern": per_module, "alpha_pattern": per_module}
    atomic_write_json(path / "adapter_config.json", peft_config)
    return path


def _export_ranks(factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], default: int) -> tuple[int, dict[str, int]]:
    """PEFT's ``r`` (the most common factor rank) and ``rank_pattern`` for the modules whose rank differs."""
    ranks = {name: int(a.shape[0]) for name, (a, _) in factors.items()}
    counts = Counter(ranks.values())
    rank = max(counts, key=lambda r: (counts[r], r)) if counts else default
    return rank, {name: r for name, r in ranks.items() if r != rank}
