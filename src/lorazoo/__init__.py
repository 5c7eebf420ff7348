"""lorazoo: every LoRA variant as a projection θ_d → θ_D behind one adapter lifecycle."""

from lorazoo.config import AdapterConfig
from lorazoo.counting import count_parameters
from lorazoo.errors import (
    AdapterFileError,
    AdapterStateError,
    ConfigError,
    LayoutMismatchError,
    LoraZooError,
    TargetModulesError,
    UnknownProjectionError,
)
from lorazoo.layout import Layout, LayoutEntry
from lorazoo.model import AdaptedModel, attach, load_adapter
from lorazoo.packaged import packaged_gguf_file, packaged_model_path
from lorazoo.projections import Projection, projection_names, register_projection
from lorazoo.version import __version__

__all__ = [
    "AdaptedModel",
    "AdapterConfig",
    "AdapterFileError",
    "AdapterStateError",
    "ConfigError",
    "Layout",
    "LayoutEntry",
    "LayoutMismatchError",
    "LoraZooError",
    "Projection",
    "TargetModulesError",
    "UnknownProjectionError",
    "__version__",
    "attach",
    "count_parameters",
    "load_adapter",
    "packaged_gguf_file",
    "packaged_model_path",
    "projection_names",
    "register_projection",
]
