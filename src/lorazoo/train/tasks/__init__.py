"""Tasks by name: tweets (the offline default), glue/*, math/*, instruct/alpaca.

Every module in this package is imported here (pkgutil), so a new task is one file with
``@register_task("name")`` plus its configs/task/<name>.yaml.
"""

import importlib
import pkgutil

from lorazoo.train.tasks.base import Task, TaskOptions, build_task, register_task, task_class, task_names

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Task", "TaskOptions", "build_task", "register_task", "task_class", "task_names"]
