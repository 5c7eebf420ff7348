"""The one optimizer spec: every lr / weight decay comes from configs/optimizer/ through build_optimizer."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_bert

from lorazoo import AdapterConfig, LoraZooError, attach
from lorazoo.train.engine.optimizer import OptimizerOptions, build_optimizer
from lorazoo.train.errors import ConfigError


def model(projection: str = "lora", **kwargs):
    cfg = AdapterConfig(
        projection=projection,
        rank=4,
        target_modules=["query", "value"],
        modules_to_save=["classifier"],
        projection_kwargs=kwargs,
    )
    return attach(tiny_bert(), cfg)


def by_name(optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    return {g["name"]: g for g in optimizer.param_groups}


def test_group_lrs_and_decay_with_bias_excluded():
    m = model()
    opts = OptimizerOptions(
        lr=1e-3, weight_decay=0.01, betas=[0.8, 0.99], eps=1e-6, groups={"head": {"lr": 5e-2, "weight_decay": 0.1}}
    )
    groups = by_name(build_optimizer(m, opts))
    assert set(groups) == {"projection", "head", "head/no_decay"}
    assert (groups["projection"]["lr"], groups["projection"]["weight_decay"]) == (1e-3, 0.01)
    assert (groups["head"]["lr"], groups["head"]["weight_decay"]) == (5e-2, 0.1)
    assert (groups["head/no_decay"]["lr"], groups["head/no_decay"]["weight_decay"]) == (5e-2, 0.0)
    head = m.base_model.classifier.copies["default"]
    assert [p is head.bias for p in groups["head/no_decay"]["params"]] == [True]
    assert [p is head.weight for p in groups["head"]["params"]] == [True]
    assert groups["projection"]["betas"] == (0.8, 0.99) and groups["projection"]["eps"] == 1e-6
    trained = {id(p) for g in groups.values() for p in g["params"]}
    assert trained == {id(p) for p in m.parameters() if p.requires_grad}


def test_vblora_bank_and_logits_get_their_own_lrs():
    m = model("vblora", num_vectors=8, vector_length=8, topk=2)
    opts = OptimizerOptions(lr=1e-3, groups={"bank": {"lr": 1e-3}, "logits": {"lr": 1e-2}})
    groups = by_name(build_optimizer(m, opts))
    assert groups["bank"]["params"] == [m.projection.bank] and groups["bank"]["lr"] == 1e-3
    assert groups["logits"]["params"] == [m.projection.logits] and groups["logits"]["lr"] == 1e-2
    assert groups["head"]["lr"] == 1e-3  # not named: the optimizer-wide lr


def test_trainer_uses_the_spec_not_training_arguments(tmp_path):
    from transformers import TrainingArguments

    from lorazoo.train.engine.trainer import LoraZooTrainer

    m = model()
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=123.0, weight_decay=7.0, report_to=[])
    trainer = LoraZooTrainer(model=m, args=args, optimizer_options=OptimizerOptions(lr=2e-3, weight_decay=0.0))
    optimizer = trainer.create_optimizer()
    optimizer = getattr(optimizer, "optimizer", optimizer)
    assert {(g["lr"], g["weight_decay"]) for g in optimizer.param_groups} == {(2e-3, 0.0)}


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"lr": 0.0}, "optimizer.lr=0.0 is invalid; valid: a finite number > 0"),
        ({"weight_decay": -1}, "optimizer.weight_decay=-1 is invalid"),
        ({"betas": [0.9]}, "optimizer.betas=[0.9] is invalid; valid: two numbers in [0, 1)"),
        ({"name": "sgd"}, "optimizer.name='sgd' is not valid; choose one of ['adamw']"),
        ({"groups": {"head": {"lr": -1}}}, "optimizer.groups.head.lr=-1 is invalid"),
        ({"groups": {"head": {"learning_rate": 1}}}, "unknown key(s) ['learning_rate'] in optimizer.groups.head"),
    ],
)
def test_bad_spec_is_a_one_line_error(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        OptimizerOptions(**kwargs)
    assert isinstance(info.value, LoraZooError) and fragment in str(info.value) and "\n" not in str(info.value)


def test_unknown_group_names_the_adapters_groups():
    with pytest.raises(
        ConfigError, match=r"unknown group\(s\) \['bank'\]; this adapter's groups: \['head', 'projection'\]"
    ):
        build_optimizer(model(), OptimizerOptions(groups={"bank": {"lr": 1e-2}}))
