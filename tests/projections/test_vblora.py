"""VB-LoRA: parity with PEFT's VB-LoRA (ΔW, logits, bank and logit gradients), the paper's counts,
the divisibility error, option checks, the top-k-only save format and a golden init checksum."""

from __future__ import annotations

import hashlib

import pytest
import torch
from helpers import model_inputs, perturb, tiny_bert, tiny_llama
from safetensors.torch import load_file

from lorazoo import AdapterConfig, ConfigError, Layout, attach, load_adapter
from lorazoo.projections import build_projection

MODELS = {"bert": (tiny_bert, ["query", "value"]), "llama": (tiny_llama, "all-linear")}
KWARGS = {"num_vectors": 16, "vector_length": 8, "topk": 2}
GOLDEN_SEED0_BERT = "64bcc6d07dbaa1fa"  # sha256 prefix of seed-0 bank ‖ logits (float32 bytes), tiny BERT q,v, r = 4


def make(kind: str = "bert", seed: int = 0, **kwargs) -> torch.nn.Module:
    factory, targets = MODELS[kind]
    cfg = AdapterConfig(
        projection="vblora", rank=4, target_modules=targets, seed=seed, projection_kwargs={**KWARGS, **kwargs}
    )
    return attach(factory(0), cfg)


def peft_layers(peft_model) -> dict[str, torch.nn.Module]:
    prefix = "base_model.model."
    return {
        n[len(prefix) :]: m
        for n, m in peft_model.named_modules()
        if hasattr(m, "vblora_logits_A") and n.startswith(prefix)
    }


def paired_models(kind: str):
    """PEFT's VB-LoRA and ours on the same base; PEFT's bank and logits (made O(1)) copied into ours."""
    from peft import VBLoRAConfig, get_peft_model

    factory, targets = MODELS[kind]
    peft_config = VBLoRAConfig(r=4, target_modules=targets, num_vectors=16, vector_length=8, topk=2, vblora_dropout=0.0)
    peft_model = get_peft_model(factory(0), peft_config)
    layers = peft_layers(peft_model)
    bank = peft_model.base_model.vblora_vector_bank["default"]
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():  # larger values than the init so that ΔW is O(1) and a wrong layout shows
        bank.copy_(torch.randn(bank.shape, generator=g))
        for layer in layers.values():
            for logits in (layer.vblora_logits_A["default"], layer.vblora_logits_B["default"]):
                logits.copy_(torch.randn(logits.shape, generator=g))
    ours = make(kind)
    assert list(layers) == [e.name for e in ours.layout]
    n = ours.projection.bank.shape[0]
    with torch.no_grad():
        ours.projection.bank.copy_(bank)
        ours.projection.logits.copy_(
            torch.cat(
                [
                    t.reshape(-1, n)
                    for layer in layers.values()
                    for t in (layer.vblora_logits_A["default"], layer.vblora_logits_B["default"])
                ]
            )
        )
    ours.cache.invalidate()
    return ours, peft_model, layers, bank


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_matches_peft_vblora_delta_logits_and_gradients(kind):
    ours, peft_model, layers, bank = paired_models(kind)
    with torch.no_grad():
        for name, layer in layers.items():
            expected = layer.get_delta_weight("default")
            assert expected.abs().max() > 0.1
            torch.testing.assert_close(ours.delta_weight(name), expected, atol=1e-5, rtol=1e-5)
    inputs = model_inputs(kind)
    ours_out, peft_out = ours(**inputs).logits, peft_model(**inputs).logits
    torch.testing.assert_close(ours_out, peft_out, atol=1e-5, rtol=0)
    ours_out.pow(2).mean().backward()
    peft_out.pow(2).mean().backward()
    torch.testing.assert_close(ours.projection.bank.grad, bank.grad, atol=1e-5, rtol=1e-4)
    n = bank.shape[0]
    peft_grads = torch.cat(
        [
            t.grad.reshape(-1, n)
            for layer in layers.values()
            for t in (layer.vblora_logits_A["default"], layer.vblora_logits_B["default"])
        ]
    )
    assert peft_grads.abs().max() > 0
    torch.testing.assert_close(ours.projection.logits.grad, peft_grads, atol=1e-5, rtol=1e-4)


def test_stored_count_matches_peft_savable_count():
    from peft import VBLoRAConfig, get_peft_model

    peft_model = get_peft_model(
        tiny_llama(),
        VBLoRAConfig(
            r=4, target_modules="all-linear", num_vectors=16, vector_length=8, topk=2, save_only_topk_weights=True
        ),
    )
    savable, _ = peft_model.get_nb_savable_parameters()
    ours = make("llama")
    assert ours.projection.stored_numel() == savable
    trainable = sum(p.numel() for n, p in peft_model.named_parameters() if "vblora" in n)
    assert ours.projection.d == trainable


def test_paper_counts_roberta_base_query_value():
    """Li et al. 2024: 90 vectors of length 256, r = 4 → stored 23,040 + 1.5 × 576 = 23,904; trainable 74,880."""
    shapes = [(f"layer.{i}.{kind}", 768, 768) for i in range(12) for kind in ("query", "value")]
    layout = Layout.from_shapes(shapes, rank=4)
    cfg = AdapterConfig(projection="vblora", rank=4, projection_kwargs={"num_vectors": 90, "vector_length": 256})
    projection = build_projection(layout, cfg)
    assert projection.num_subvectors == 576
    assert projection.bank.numel() == 23_040
    assert projection.d == 23_040 + 51_840 == 74_880
    assert projection.stored_numel() == 23_904
    assert set(projection.parameter_groups()) == {"bank", "logits"}
    assert projection.parameter_groups()["logits"][0] is projection.logits


def test_vector_length_must_divide_every_size():
    with pytest.raises(ConfigError) as info:
        make("bert", vector_length=12)
    message = str(info.value)
    assert "vector_length=12" in message and "in_features=32" in message and "layer.0.attention.self.query" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match=r"out_features=16 .*k_proj.*divisor of 16"):
        make("llama", vector_length=32)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"topk": 17}, "topk=17"),
        ({"topk": 0}, "topk=0"),
        ({"num_vectors": 0}, "num_vectors=0"),
        ({"init_bank": -0.1}, "init_bank=-0.1"),
        ({"init_logits_std": "x"}, "init_logits_std='x'"),
        ({"save_topk_only": "yes"}, "save_topk_only='yes'"),
        ({"bank_size": 3}, "bank_size"),
    ],
)
def test_bad_options_are_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make("bert", **kwargs)


def test_init_distributions_and_golden_checksum():
    projection = make("bert").projection
    assert projection.bank.abs().max() <= 0.02
    assert abs(projection.logits.std().item() - 0.1) < 0.01
    digest = hashlib.sha256(
        projection.bank.detach().numpy().tobytes() + projection.logits.detach().numpy().tobytes()
    ).hexdigest()
    assert digest[:16] == GOLDEN_SEED0_BERT
    assert not torch.equal(projection.logits, make("bert", seed=1).projection.logits)


def test_forward_is_topk_softmax_mix_of_bank_rows():
    """θ_D from a plain per-sub-vector loop: row i = Σ_j softmax(top-k logits)_j · bank[idx_j], B transposed."""
    model = make("llama", topk=3)
    p = model.projection
    b = p.bank.shape[1]
    rows = []
    for z in p.logits.detach():
        top, idx = z.topk(3)
        rows.append((torch.softmax(top, 0)[:, None] * p.bank.detach()[idx]).sum(0))
    vectors, start, pieces = torch.stack(rows), 0, []
    for e in model.layout:
        na, nb = e.a_numel // b, e.b_numel // b
        pieces.append(vectors[start : start + na].reshape(-1))
        pieces.append(
            vectors[start + na : start + na + nb].view(e.out_features // b, e.rank, b).transpose(1, 2).reshape(-1)
        )
        start += na + nb
    torch.testing.assert_close(p().detach(), torch.cat(pieces), atol=1e-7, rtol=1e-6)


def test_save_topk_only_is_small_and_reloads_identical_theta(tmp_path):
    model = make("llama", save_topk_only=True)
    perturb(model, scale=0.5)
    with torch.no_grad():
        theta_D = model.projection().clone()
        expected = model(**model_inputs("llama")).logits
    model.save_adapter(tmp_path)
    tensors = load_file(str(tmp_path / "adapter.safetensors"))
    assert sorted(tensors) == ["projection.bank", "projection.topk_indices", "projection.topk_logit_gaps"]
    S = model.projection.num_subvectors
    assert tensors["projection.topk_indices"].dtype == torch.uint8 and tensors["projection.topk_indices"].shape == (
        S,
        2,
    )
    assert tensors["projection.topk_logit_gaps"].shape == (S, 1)
    assert sum(t.numel() for t in tensors.values()) < model.projection.d / 4

    loaded = load_adapter(tiny_llama(0), tmp_path)
    assert loaded.projection.inference_only
    assert torch.equal(loaded.projection().detach(), theta_D)
    assert not any(p.requires_grad for p in loaded.parameters()), "a top-k-only adapter is inference-only"
    torch.testing.assert_close(loaded(**model_inputs("llama")).logits, expected, atol=0, rtol=0)
    loaded.save_adapter(tmp_path / "again")  # re-saving a loaded top-k adapter keeps the same top-k
    again = load_file(str(tmp_path / "again" / "adapter.safetensors"))
    assert all(torch.equal(again[k], tensors[k]) for k in tensors)


def test_save_topk_only_rejects_corrupt_indices(tmp_path):
    from safetensors.torch import save_file

    from lorazoo import AdapterFileError

    model = make("bert", save_topk_only=True)
    model.save_adapter(tmp_path)
    tensors = load_file(str(tmp_path / "adapter.safetensors"))
    tensors["projection.topk_indices"][0] = 200
    save_file(tensors, str(tmp_path / "adapter.safetensors"))
    with pytest.raises(AdapterFileError, match="topk_indices"):
        load_adapter(tiny_bert(0), tmp_path)
