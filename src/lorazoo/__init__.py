"""lorazoo: every LoRA variant as a projection θ_d → θ_D behind one adapter lifecycle."""

from .config import AdapterConfig
from .counting import count_parameters
from .errors import (
    AdapterFileError,
    AdapterStateError,
    ConfigError,
    LayoutMismatchError,
    LoraZooError,
    TargetModulesError,
    UnknownProjectionError,
)
from .layout import Layout, LayoutEntry
from .model import AdaptedModel, attach, load_adapter
from .packaged import packaged_gguf_file, packaged_model_path
from .projections import Projection, projection_names, register_projection
from .version import __version__

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
