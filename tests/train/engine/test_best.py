"""Which direction Trainer ranks evaluations by (``greater_is_better``): the task's declared meaning, not a
guess from the metric's name."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lorazoo.train.engine.best import best_greater_is_better, best_metric_name
from lorazoo.train.options import TrainerOptions
from lorazoo.train.tasks import build_task

LOWER_FIRST = {"main_metric": "word_error_rate", "greater_is_better": False}
HIGHER_FIRST = {"main_metric": "accuracy", "greater_is_better": True}


@pytest.mark.parametrize(
    "given, metric, meaning, expected",
    [
        (None, "word_error_rate", LOWER_FIRST, False),  # Trainer's name rule would say True
        (None, "accuracy", HIGHER_FIRST, True),
        (None, "loss", HIGHER_FIRST, False),
        (None, "f1", HIGHER_FIRST, True),  # another score of the task: Trainer's rule
        (True, "word_error_rate", LOWER_FIRST, True),  # the user's trainer.greater_is_better wins
        (False, "accuracy", HIGHER_FIRST, False),
    ],
)
def test_direction_defaults_to_the_tasks_declaration(given, metric, meaning, expected):
    assert best_greater_is_better(TrainerOptions(greater_is_better=given), metric, meaning) is expected


@pytest.mark.parametrize(
    "task, metric, greater",
    [
        ({"name": "tweets"}, "accuracy", True),
        ({"name": "glue/cola"}, "matthews_correlation", True),
        ({"name": "glue/stsb"}, "pearson", True),
        ({"name": "instruct/alpaca"}, "loss", False),  # causal LM: evaluation reports the loss only
        ({"name": "math/gsm8k"}, "loss", False),
        ({"name": "text/generate", "data_file": "x.jsonl"}, "loss", False),
    ],
)
def test_trainer_best_model_defaults_per_task(task, metric, greater):
    built = build_task(OmegaConf.create(task), 0)
    options = TrainerOptions()
    chosen = best_metric_name(options, built.metric_keys(), built.prediction_loss_only)
    assert (chosen, best_greater_is_better(options, chosen, built.metric_meaning())) == (metric, greater)
