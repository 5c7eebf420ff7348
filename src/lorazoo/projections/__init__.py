"""Every projection module is imported here so that its ``@register_projection`` runs."""

from .base import (
    Projection,
    build_projection,
    get_projection_class,
    lora_style_init,
    projection_names,
    register_projection,
)
from . import lora, unilora, gaussian, fastfood, tied, vera, vblora, prolora  # noqa: F401,E402  (registration side effect)

__all__ = [
    "Projection",
    "build_projection",
    "get_projection_class",
    "lora_style_init",
    "projection_names",
    "register_projection",
]
