"""Tasks by name: tweets (the offline default), glue/*, math/gsm8k, instruct/alpaca."""

from . import glue, instruct, math_reasoning, tweets  # noqa: F401  (registration)
from .base import Task, TaskOptions, build_task, register_task, task_names

__all__ = ["Task", "TaskOptions", "build_task", "register_task", "task_names"]
