"""lorazoo: every LoRA variant as a projection θ_d → θ_D behind one adapter lifecycle."""

from .version import __version__
from .config import AdapterConfig  # noqa: E402
from .errors import (  # noqa: E402
    AdapterFileError,
    AdapterStateError,
    ConfigError,
    LayoutMismatchError,
    LoraZooError,
    TargetModulesError,
    UnknownProjectionError,
)
from .layout import Layout, LayoutEntry  # noqa: E402
from .model import AdaptedModel, attach, load_adapter  # noqa: E402
from .projections import Projection, projection_names, register_projection  # noqa: E402
from .counting import count_parameters  # noqa: E402
from .packaged import packaged_gguf_file, packaged_model_path  # noqa: E402

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
