"""Every module in this package is imported here (pkgutil), so its ``@register_projection`` runs.

Adding a method is therefore one new file in projections/: no list of modules to extend.
"""

import importlib
import pkgutil

from lorazoo.projections.base import (
    PaperSettings,
    Projection,
    build_projection,
    get_projection_class,
    layout_rank,
    lora_style_init,
    projection_names,
    register_projection,
)
from lorazoo.projections.options import option

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "PaperSettings",
    "Projection",
    "build_projection",
    "get_projection_class",
    "layout_rank",
    "lora_style_init",
    "option",
    "projection_names",
    "register_projection",
]
