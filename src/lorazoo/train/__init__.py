"""Training runner (Hydra-free entry: ``run(cfg)``): tasks, model loading, Trainer glue, W&B, metrics.json.

The core (``lorazoo.*`` outside this package) never imports it; this package uses the core's public API.
"""

from lorazoo.train.runner import run
from lorazoo.train.tasks import build_task, register_task, task_names

__all__ = ["build_task", "register_task", "run", "task_names"]
