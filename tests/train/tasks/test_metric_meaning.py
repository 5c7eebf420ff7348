"""Each task declares its main metric and its direction once (``Task.metric_meaning``); every shipped task
config is checked against the metric the task's paper convention ranks by."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lorazoo.train.tasks import build_task, task_class, task_names

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "task"
CONFIG_FILES = sorted(CONFIGS.rglob("*.yaml"))

# task config (relative to configs/task, plus overrides) -> (main metric, greater is better)
EXPECTED = {
    "tweets": ("accuracy", True),
    "glue/cola": ("matthews_correlation", True),
    "glue/sst2": ("accuracy", True),
    "glue/mrpc": ("accuracy", True),
    "glue/qqp": ("accuracy", True),
    "glue/stsb": ("pearson", True),
    "glue/mnli": ("accuracy", True),
    "glue/qnli": ("accuracy", True),
    "glue/rte": ("accuracy", True),
    "math/gsm8k": ("exact_match", True),
    "math/math": ("exact_match", True),
    "math/gsm8k eval=both": ("gsm8k_exact_match", True),
    "instruct/alpaca": ("perplexity", False),
    "text/classify": ("accuracy", True),
    "text/classify regression=true": ("pearson", True),
    "text/generate": ("perplexity", False),
}


def _node(case: str):
    """The ``task`` node of a shipped config, with ``key=value`` overrides after the file name."""
    path, *overrides = case.split()
    loaded = yaml.safe_load((CONFIGS / f"{path}.yaml").read_text())
    node = OmegaConf.create(loaded.get("task", loaded))  # a `_global_` package nests under `task:`
    for override in overrides:
        key, value = override.split("=", 1)
        OmegaConf.update(node, key, yaml.safe_load(value))
    return node


def test_every_shipped_task_config_has_an_expected_meaning():
    shipped = {str(p.relative_to(CONFIGS).with_suffix("")) for p in CONFIG_FILES}
    assert shipped == {case.split()[0] for case in EXPECTED}


def test_every_registered_task_class_is_covered():
    covered = {task_class(str(_node(case).name)) for case in EXPECTED}
    assert {task_class(name) for name in task_names()} <= covered


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_task_declares_its_main_metric_and_direction(case):
    task = build_task(_node(case), seed=0)
    meaning = task.metric_meaning()
    assert meaning == {"main_metric": EXPECTED[case][0], "greater_is_better": EXPECTED[case][1]}
    assert meaning["main_metric"] in task.metric_keys()


def test_a_task_without_scores_of_its_own_ranks_by_loss_lower_first():
    task = build_task(_node("tweets"), seed=0)
    task.metric_keys = list  # type: ignore[method-assign]
    assert task.metric_meaning() == {"main_metric": "loss", "greater_is_better": False}
