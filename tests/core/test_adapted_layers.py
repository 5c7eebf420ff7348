"""GPT-2's Conv1D and nn.Embedding targets, and target lists whose every entry must match something."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import perturb, tiny_gpt2, tiny_llama
from torch import nn

from lorazoo import (
    AdapterConfig,
    AdapterStateError,
    TargetModulesError,
    attach,
    count_parameters,
)
from lorazoo.adapted_layers import AdaptedConv1D, AdaptedEmbedding, AdaptedLinear

IDS = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(9))


def test_gpt2_c_attn_is_adapted_through_its_conv1d():
    """Was: "target_modules=['c_attn'] matched no nn.Linear"."""
    model = attach(tiny_gpt2(), AdapterConfig(rank=4, target_modules=["c_attn"]))
    assert [type(layer) for layer in model.adapted_layers()] == [AdaptedConv1D, AdaptedConv1D]
    entry = model.layout.entry("transformer.h.0.attn.c_attn")
    assert (entry.in_features, entry.out_features) == (32, 96)  # Conv1D stores its weight (in × out) = (32, 96)


def test_all_linear_on_gpt2_takes_every_conv1d_but_not_the_head():
    """Was: `all-linear` on GPT-2 found only lm_head."""
    model = attach(tiny_gpt2(), AdapterConfig(rank=4, target_modules="all-linear"))
    kinds = sorted({e.name.split(".", 3)[-1] for e in model.layout})
    assert kinds == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"] and "lm_head" not in model.layout


def test_conv1d_merge_adds_the_transposed_delta(tmp_path):
    model = attach(tiny_gpt2(), AdapterConfig(rank=4, target_modules=["c_attn"]))
    perturb(model)
    layer = model.adapted_layers()[0]
    before = layer.base_layer.weight.detach().clone()
    delta = model.delta_weight(layer.module_name)  # (out × in), the layout's orientation
    with torch.no_grad():
        model.merge()
    torch.testing.assert_close(layer.base_layer.weight - before, delta.T, atol=1e-6, rtol=0)
    model.unmerge()
    model.export_peft_lora(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["fan_in_fan_out"] is True


def test_embedding_listed_beside_a_linear_is_adapted_not_skipped(tmp_path):
    """Was: ["embed_tokens", "q_proj"] adapted q_proj only, without a word."""
    from peft import PeftModel
    from safetensors.torch import load_file

    model = attach(tiny_llama(), AdapterConfig(rank=4, target_modules=["embed_tokens", "q_proj"]))
    assert isinstance(model.base_model.get_submodule("model.embed_tokens"), AdaptedEmbedding)
    assert sum(isinstance(layer, AdaptedLinear) for layer in model.adapted_layers()) == 2
    entry = model.layout.entry("model.embed_tokens")
    assert (entry.in_features, entry.out_features) == (128, 32)  # A: r × num_embeddings, B: dim × r
    perturb(model)
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
        assert not torch.allclose(expected, tiny_llama()(input_ids=IDS).logits, atol=1e-4)
    model.export_peft_lora(tmp_path)
    keys = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert keys["base_model.model.model.embed_tokens.lora_embedding_A"].shape == (4, 128)
    assert keys["base_model.model.model.embed_tokens.lora_embedding_B"].shape == (32, 4)
    peft_model = PeftModel.from_pretrained(tiny_llama(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=IDS).logits, expected, atol=1e-5, rtol=0)


def test_embedding_alone_is_a_target():
    """Was refused: an embedding-only target list matched 'no nn.Linear'."""
    model = attach(tiny_gpt2(), AdapterConfig(rank=4, target_modules=["wte"]))
    assert [type(layer) for layer in model.adapted_layers()] == [AdaptedEmbedding]


@pytest.mark.parametrize(
    "targets, named",
    [
        (["embed_tokenz", "q_proj"], "'embed_tokenz'"),
        (["q_proj", "v_prj"], "'v_prj'"),
        (["input_layernorm"], "input_layernorm"),
    ],
)
def test_every_listed_target_must_match_an_adaptable_module(targets, named):
    with pytest.raises(TargetModulesError) as info:
        attach(tiny_llama(), AdapterConfig(rank=4, target_modules=targets))
    assert named in str(info.value) and "embed_tokens" in str(info.value) and "\n" not in str(info.value)


def test_merging_into_a_tied_embedding_is_refused():
    """GPT-2's wte is lm_head's weight: a merge would change the output layer too, unlike the unmerged adapter."""
    model = attach(tiny_gpt2(), AdapterConfig(rank=4, target_modules=["wte", "c_attn"]))
    perturb(model)
    before = model.base_model.lm_head.weight.detach().clone()
    with pytest.raises(AdapterStateError, match=r"'transformer.wte'.*tied to \['lm_head.weight'\]"):
        model.merge()
    assert model.merged_adapter is None and torch.equal(model.base_model.lm_head.weight, before)


def test_embedding_with_max_norm_is_refused():
    base = nn.Sequential()
    base.add_module("emb", nn.Embedding(16, 8, max_norm=1.0))
    with pytest.raises(TargetModulesError, match="max_norm=1.0"):
        attach(base, AdapterConfig(rank=2, target_modules=["emb"]))


def test_counting_sees_conv1d_and_embeddings_on_the_meta_device():
    dims = {
        "model_type": "gpt2",
        "vocab_size": 128,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 2,
        "n_positions": 64,
        "task_type": "causal_lm",
    }
    r = 4
    counts = count_parameters(dims, AdapterConfig(projection="lora", rank=r, target_modules="all-linear"))
    per_block = (32 + 96) + (32 + 32) + (32 + 128) + (128 + 32)  # c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert counts["D"] == counts["trainable"] == 2 * r * per_block
    counts = count_parameters(dims, AdapterConfig(projection="lora", rank=r, target_modules=["wte"]))
    assert counts["D"] == r * (128 + 32)
