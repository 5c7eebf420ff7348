"""Target matching beside ``modules_to_save``: a module trained in full (a task head) is never also adapted,
the same modules as PEFT's LoRA on the same config; an entry that selects only such modules is an error."""

from __future__ import annotations

import pytest
import torch

from lorazoo import AdapterConfig, attach, count_parameters
from lorazoo.errors import TargetModulesError
from lorazoo.train.loading.tiny import TINY_CONFIGS

# RoBERTa's classification head holds Linear layers (classifier.dense, classifier.out_proj) whose names end
# like the encoder's, so a name list can reach into the head
ROBERTA = dict(TINY_CONFIGS["bert"], pad_token_id=1)


def tiny_roberta():
    from transformers import AutoModelForSequenceClassification, RobertaConfig

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(RobertaConfig(vocab_size=128, **ROBERTA)).eval()


@pytest.mark.parametrize("targets", [["query", "value", "dense"], "all-linear", r".*\.(query|dense)"])
def test_modules_to_save_are_never_targets_as_in_peft(targets):
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    peft_model = get_peft_model(tiny_roberta(), LoraConfig(r=2, target_modules=targets, modules_to_save=["classifier"]))
    peft_targets = sorted(
        n.removeprefix("base_model.model.") for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)
    )
    config = AdapterConfig(projection="lora", rank=2, target_modules=targets, modules_to_save=["classifier"])
    model = attach(tiny_roberta(), config)
    assert sorted(e.name for e in model.layout) == peft_targets
    assert not any(name.startswith("classifier") for name in peft_targets)
    counted = count_parameters(tiny_roberta().config, config, task_type="seq_cls")
    assert counted["trainable"] == model.num_parameters()["trainable"]


def test_an_entry_that_selects_only_a_fully_trained_module_is_one_line():
    config = AdapterConfig(
        projection="lora", rank=2, target_modules=["query", "out_proj"], modules_to_save=["classifier"]
    )
    with pytest.raises(TargetModulesError, match=r"'out_proj' only matches modules inside modules_to_save") as err:
        attach(tiny_roberta(), config)
    assert "\n" not in str(err.value)
