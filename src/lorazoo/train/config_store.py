"""Projection option defaults as Hydra config nodes, taken from each projection's Options dataclass.

configs/projection/<name>.yaml pulls ``/projection_options/<name>`` into ``projection.kwargs``, so every
option can be overridden from the command line (``projection.kwargs.d=4096``) while its default lives
in ONE place, the projection's file; the yaml only writes the paper values that differ from it.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from ..projections import get_projection_class, projection_names

GROUP = "projection_options"


def register_projection_options() -> None:
    """Store every registered projection's option defaults as ``projection_options/<name>``."""
    store = ConfigStore.instance()
    for name in projection_names():
        store.store(group=GROUP, name=name, node=dict(get_projection_class(name).defaults))
