"""One set of test helpers: tiny models, run.py config composition, tiny runs and paths.

Tests import them as ``from helpers import ...`` (pytest puts tests/ on the path); conftest.py keeps only
fixtures and hooks.
"""

from helpers.models import (
    FAMILY_CONFIGS,
    PROJECTION_CASES,
    TINY_MODELS,
    TINY_TARGETS,
    model_inputs,
    perturb,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
    tiny_model,
)
from helpers.paths import REPO_ROOT, RUN_PY, SHARED_DATA
from helpers.runs import (
    QUIET,
    TINY,
    Killed,
    compose_config,
    group_options,
    run_config,
    run_env,
    run_py,
    snapshot,
    tiny_job,
    train_killed_at_step,
    train_tiny,
)

__all__ = [
    "FAMILY_CONFIGS",
    "PROJECTION_CASES",
    "QUIET",
    "REPO_ROOT",
    "RUN_PY",
    "SHARED_DATA",
    "TINY",
    "TINY_MODELS",
    "TINY_TARGETS",
    "Killed",
    "compose_config",
    "group_options",
    "model_inputs",
    "perturb",
    "run_config",
    "run_env",
    "run_py",
    "snapshot",
    "tiny_bert",
    "tiny_gpt2",
    "tiny_job",
    "tiny_llama",
    "tiny_model",
    "train_killed_at_step",
    "train_tiny",
]
