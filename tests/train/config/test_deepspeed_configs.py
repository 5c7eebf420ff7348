"""DeepSpeed cannot run on this CPU machine: the shipped ZeRO configs compose into TrainingArguments'
``deepspeed`` key, and the adapter save/load path honours ZeRO-3's partitioned parameters, checked with
a CPU double of the one DeepSpeed API lorazoo calls (``deepspeed.zero.GatheredParameters``)."""

from __future__ import annotations

import contextlib
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import compose_config, perturb, tiny_bert
from safetensors.torch import load_file

from lorazoo import AdapterConfig, attach
from lorazoo.cli import CONFIG_DIR
from lorazoo.train.engine.distributed import scale_arguments
from lorazoo.train.errors import ConfigError
from lorazoo.train.options import TrainerOptions, from_node

SHIPPED = Path(CONFIG_DIR) / "deepspeed"


@pytest.mark.parametrize("given,stage", [("zero2.json", 2), ("configs/deepspeed/zero3.json", 3)])
def test_shipped_zero_configs_reach_training_arguments(given: str, stage: int):
    # as on a GPU node
    cfg = compose_config(f"trainer.deepspeed={given}", "trainer.precision=bf16", "trainer.use_cpu=false")
    kwargs = scale_arguments(from_node(TrainerOptions, cfg.trainer, "trainer"))
    path = Path(kwargs["deepspeed"])
    assert path.is_file() and path.parent == SHIPPED.resolve()
    ds = json.loads(path.read_text())
    assert ds["zero_optimization"]["stage"] == stage
    # Trainer fills "auto" from trainer.*; lorazoo saves the adapter itself, never the 16-bit base
    assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == "auto"
    assert ds["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save", False) is False


def test_a_missing_deepspeed_file_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match=r"trainer.deepspeed='zero4.json' is not a file.*zero2.json,zero3.json"):
        scale_arguments(TrainerOptions(deepspeed="zero4.json"))


class ZeroThreeDouble:
    """What ZeRO-3 does to a parameter, on CPU: ``.data`` is an empty partition, ``ds_shape`` the real
    shape, and ``GatheredParameters`` makes it whole for the duration, keeping ``modifier_rank``'s writes."""

    def __init__(self) -> None:
        self.whole: dict[int, torch.Tensor] = {}
        self.gathers = 0

    def partition(self, param: torch.nn.Parameter) -> None:
        param.ds_id, param.ds_shape = id(param), param.shape
        self.whole[id(param)] = param.data.clone()
        param.data = torch.empty(0, dtype=param.dtype)

    @contextlib.contextmanager
    def GatheredParameters(self, params, modifier_rank=None):
        self.gathers += 1
        for p in params:
            p.data = self.whole[p.ds_id].clone()
        try:
            yield
        finally:
            for p in params:
                if modifier_rank is not None:
                    self.whole[p.ds_id] = p.data.clone()
                p.data = torch.empty(0, dtype=p.dtype)


def test_zero3_partitions_are_gathered_to_save_and_filled_on_load(tmp_path: Path, monkeypatch):
    config = AdapterConfig(projection="vera", rank=2, target_modules=["query", "value"], modules_to_save=["classifier"])
    model = attach(tiny_bert(), config)
    perturb(model)
    expected = {k: v.clone() for k, v in model.adapter_tensors().items()}
    zero = ZeroThreeDouble()
    monkeypatch.setitem(sys.modules, "deepspeed", types.SimpleNamespace(zero=zero))  # only lorazoo imports it now
    for p in [*model.projection.parameters(), *model._head_parameters()]:
        zero.partition(p)
    assert all(p.numel() == 0 for p in model.projection.parameters())
    model.save_adapter(tmp_path / "a")
    saved = load_file(str(tmp_path / "a" / "adapter.safetensors"))
    assert zero.gathers >= 1 and saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k]) for k in saved)  # whole tensors, not empty partitions

    with torch.no_grad():
        for p in model.projection.parameters():
            zero.whole[p.ds_id].zero_()
    model.load_adapter_weights(tmp_path / "a")  # into the partitioned model: rank 0 writes, DeepSpeed re-partitions
    for name, p in model.projection.named_parameters():
        assert torch.equal(zero.whole[p.ds_id], expected[f"projection.{name}"]), name
