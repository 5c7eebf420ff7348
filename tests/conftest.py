"""Fixtures and hooks only (the shared helpers are the ``helpers`` package): one math thread per process,
offline hubs, an environment restored after each test, the floors marker."""

from __future__ import annotations

import os

# one math thread per test process: `pytest -n 2` on 2 cores runs two workers, and torch's default of one
# thread per core made each worker's tiny forwards ~40x slower through oversubscription (set before torch
# loads; subprocess runs inherit it)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_environment():
    """Undo every os.environ change a test makes, including ones made by library code it calls (submitit's
    TorchDistributedEnvironment exports RANK/WORLD_SIZE directly): a leaked WORLD_SIZE would turn a later
    in-process run on the same xdist worker into a rendezvous that never completes."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


# The subset scripts/ci_floors.sh runs under the lowest versions pyproject.toml allows: the modules that
# exercise each direct dependency (Trainer/datasets, Hydra + Optuna, PEFT/TRL, bitsandbytes, lm-eval,
# math-verify, gguf), so a floor that is false fails CI.
FLOORS_MODULES = {
    "test_core",
    "test_runner",
    "test_tasks",
    "test_interop",
    "test_optimizer",
    "test_sweep",
    "test_quantized",
    "test_math",
    "test_gguf_cache",
    "test_lm_eval",
    "test_model_families",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in FLOORS_MODULES:
            item.add_marker(pytest.mark.floors)
