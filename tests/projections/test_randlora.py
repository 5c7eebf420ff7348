"""RandLoRA: parity with PEFT 0.21's RandLoRA (ΔW, logits, λ/γ gradients, counts), factor ranks, frozen bases."""

from __future__ import annotations

import hashlib

import pytest
import torch
from helpers import model_inputs, perturb, tiny_bert, tiny_gpt2, tiny_llama

from lorazoo import AdapterConfig, attach, count_parameters, load_adapter
from lorazoo.projections.randlora import RandLoRAProjection, num_bases

GOLDEN_SEED0_R8_LLAMA = "1c0c7b488efb494e"  # sha256 prefix of seed-0 basis_A ‖ basis_B (float32 bytes)
MODELS = {
    "llama_qv": (lambda: tiny_llama(0, hidden=64, intermediate=128), ["q_proj", "v_proj"]),
    "llama_all": (lambda: tiny_llama(0, hidden=64, intermediate=128), "all-linear"),
    "bert": (tiny_bert, ["query", "value"]),
    "gpt2": (tiny_gpt2, "all-linear"),
}


def peft_randlora(kind: str, rank: int, alpha: float):
    from peft import RandLoraConfig, get_peft_model

    factory, targets = MODELS[kind]
    config = RandLoraConfig(
        r=rank,
        randlora_alpha=alpha,
        target_modules=targets,
        projection_prng_key=0,
        fan_in_fan_out=kind == "gpt2",
    )
    return get_peft_model(factory(), config)


def peft_layers(peft_model) -> dict[str, torch.nn.Module]:
    prefix = "base_model.model."
    return {
        n[len(prefix) :]: m
        for n, m in peft_model.named_modules()
        if hasattr(m, "randlora_lambda") and n.startswith(prefix)
    }


def paired_models(kind: str, rank: int = 8, alpha: float = 32.0, bases_from_peft: bool = True):
    """Ours and PEFT's on the same base, PEFT's frozen bases and (perturbed) λ, γ copied into ours."""
    factory, targets = MODELS[kind]
    peft_model = peft_randlora(kind, rank, alpha)
    layers = peft_layers(peft_model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for layer in layers.values():
            for params in (layer.randlora_lambda, layer.randlora_gamma):
                params["default"].add_(0.3 * torch.randn(params["default"].shape, generator=g))
    ours = attach(factory(), AdapterConfig(projection="randlora", rank=rank, alpha=alpha, target_modules=targets))
    p = ours.projection
    assert list(layers) == [e.name for e in ours.layout]
    a, b = p.shared_bases()
    with torch.no_grad():
        if bases_from_peft:
            a.copy_(peft_model.base_model.randlora_A["default"].squeeze(1))
            b.copy_(peft_model.base_model.randlora_B["default"])
        p.lambda_.copy_(torch.cat([m.randlora_lambda["default"].reshape(-1) for m in layers.values()]))
        p.gamma.copy_(torch.cat([m.randlora_gamma["default"].reshape(-1) for m in layers.values()]))
    ours.cache.invalidate()
    return ours, peft_model, layers


@pytest.mark.parametrize("kind", ["llama_qv", "llama_all", "bert", "gpt2"])
def test_matches_peft_randlora_delta_logits_and_gradients(kind):
    ours, peft_model, layers = paired_models(kind)
    with torch.no_grad():
        for name, layer in layers.items():
            expected = layer.get_delta_weight("default")
            expected = expected.T if kind == "gpt2" else expected  # PEFT's Conv1D ΔW is stored (in × out)
            torch.testing.assert_close(ours.delta_weight(name), expected, atol=1e-5, rtol=1e-5)
    inputs = model_inputs("llama" if kind.startswith("llama") else kind)
    ours_logits, peft_logits = ours(**inputs).logits, peft_model(**inputs).logits
    torch.testing.assert_close(ours_logits, peft_logits, atol=1e-5, rtol=0)
    ours_logits.pow(2).mean().backward()
    peft_logits.pow(2).mean().backward()
    p = ours.projection
    grad_lambda = torch.cat([m.randlora_lambda["default"].grad.reshape(-1) for m in layers.values()])
    grad_gamma = torch.cat([m.randlora_gamma["default"].grad.reshape(-1) for m in layers.values()])
    torch.testing.assert_close(p.lambda_.grad, grad_lambda, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(p.gamma.grad, grad_gamma, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("perturbed", ["basis_A", "basis_B", "formula"])
def test_parity_fails_when_a_frozen_tensor_or_the_formula_is_perturbed(perturbed, monkeypatch):
    """The parity test can fail: a changed basis entry or a changed pairing of bases breaks it."""
    from lorazoo.projections import randlora

    if perturbed == "formula":  # pair S's rows with L's columns in (i, b) order instead of PEFT's flattening
        original = randlora._oriented
        monkeypatch.setattr(
            randlora,
            "_oriented",
            lambda e, s, big: original(e, s, big.view(big.shape[0], -1, 8).transpose(1, 2).reshape(big.shape)),
        )
    ours, _, layers = paired_models("llama_qv")
    if perturbed != "formula":
        with torch.no_grad():
            getattr(ours.projection, perturbed).view(-1)[3] += 0.5
        ours.cache.invalidate()
    with torch.no_grad():
        worst = max(
            (ours.delta_weight(n) - layer.get_delta_weight("default")).abs().max().item() for n, layer in layers.items()
        )
    assert worst > 1e-4


@pytest.mark.parametrize("kind, rank, expected", [("llama_qv", 8, 1_472), ("llama_all", 16, 3_584), ("bert", 4, None)])
def test_trainable_counts_equal_peft(kind, rank, expected):
    factory, targets = MODELS[kind]
    peft_model = peft_randlora(kind, rank, 2.0 * rank)
    peft_count = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    ours = attach(factory(), AdapterConfig(projection="randlora", rank=rank, target_modules=targets))
    assert ours.projection.d == peft_count
    if expected is not None:
        assert peft_count == expected
    layout = ours.layout
    assert ours.projection.d == sum(
        num_bases(e.in_features, e.out_features, rank) * (rank + min(e.in_features, e.out_features)) for e in layout
    )


def test_meta_device_count_builds_no_bases():
    cfg = AdapterConfig(projection="randlora", rank=32, target_modules=["q_proj", "v_proj"])
    counts = count_parameters("llama-2-7b", cfg)
    # q: 4096 → 4096, v: 4096 → 4096 (no GQA): n = 128 bases of rank 32 on the 4096 side, 32 layers
    assert counts["trainable"] == 64 * 128 * (32 + 4096)
    assert counts["D"] == 64 * 4096 * (4096 + 4096)


def test_factor_rank_is_n_bases_times_r_and_exports_with_rank_pattern(tmp_path):
    import json

    from peft import PeftModel

    model = attach(
        tiny_llama(0, hidden=64, intermediate=128),
        AdapterConfig(projection="randlora", rank=12, target_modules="all-linear"),
    )
    perturb(model)
    for e in model.layout:  # q 64→64: ⌈64/12⌉ = 6 bases → rank 72; k, v 64→32: ⌈32/12⌉ = 3 → 36
        assert e.rank == num_bases(e.in_features, e.out_features, 12) * 12
    assert {e.rank for e in model.layout} == {72, 36}
    model.export_peft_lora(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 72 and set(config["rank_pattern"].values()) == {36}
    assert config["alpha_pattern"] == config["rank_pattern"]
    inputs = model_inputs("llama")
    with torch.no_grad():
        expected = model(**inputs).logits
        peft_model = PeftModel.from_pretrained(tiny_llama(0, hidden=64, intermediate=128), tmp_path)
        torch.testing.assert_close(peft_model(**inputs).logits, expected, atol=1e-5, rtol=0)


def test_save_load_keeps_per_module_ranks(tmp_path):
    model = attach(
        tiny_llama(0, hidden=64, intermediate=128),
        AdapterConfig(projection="randlora", rank=12, target_modules="all-linear"),
    )
    perturb(model)
    inputs = model_inputs("llama")
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_adapter(tmp_path)
    loaded = load_adapter(tiny_llama(0, hidden=64, intermediate=128), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, expected, atol=0, rtol=0)


def test_init_zero_delta_gamma_one_over_m_and_scaling_folded():
    model = attach(tiny_bert(), AdapterConfig(projection="randlora", rank=4, alpha=16.0))
    p = model.projection
    assert torch.count_nonzero(p.lambda_) == 0 and torch.allclose(p.gamma, torch.full_like(p.gamma, 1 / 32))
    assert p.scaling == 1.0
    for e in model.layout:
        assert torch.count_nonzero(model.delta_weight(e.name)) == 0
    with torch.no_grad():
        p.lambda_.fill_(1.0)
    e = model.layout[0]  # 32 → 32: ΔW = (α/r) L S with S rows (i, b) and L columns (b, i), rebuilt by hand
    a, b = p.shared_bases()
    n, r = num_bases(32, 32, 4), 4
    s = torch.stack([a[i, :32] * p.gamma.detach()[: n * 32].view(n, 32)[k] for i in range(r) for k in range(n)])
    big = torch.cat([b[:32, k, :] for k in range(n)], dim=1)
    torch.testing.assert_close(model.delta_weight(e.name), 4.0 * big @ s, atol=1e-6, rtol=1e-5)


def test_bases_unit_std_pinned_and_seeded():
    def bases(seed):
        model = attach(
            tiny_llama(0, hidden=64, intermediate=128),
            AdapterConfig(projection="randlora", rank=8, seed=seed, target_modules="all-linear"),
        )
        return model.projection.shared_bases()

    a, b = bases(0)
    assert a.shape == (8, 128) and b.shape == (128, 16, 8)  # widest in and out are 128 (mlp)
    for t in (a, b):
        assert abs(t.std().item() - 1.0) < 1e-5 and t.abs().max() < 1.8
        assert not t.requires_grad
    digest = hashlib.sha256(a.numpy().tobytes() + b.numpy().tobytes()).hexdigest()[:16]
    assert digest == GOLDEN_SEED0_R8_LLAMA, digest
    assert not torch.equal(bases(1)[0], a)


def test_projection_builds_from_layout_alone():
    from lorazoo import Layout

    layout = Layout.from_shapes(
        [("q", 32, 48), ("o", 48, 32)], rank=lambda i, o: RandLoRAProjection.factor_rank(i, o, 8)
    )
    p = RandLoRAProjection(layout, AdapterConfig(projection="randlora", rank=8))
    assert p.basis_A is None and p.basis_B is None  # nothing random is built until first use
    assert p().shape == (layout.D,) and p.basis_B.shape == (48, 6, 8)  # m_max = M_max = 48


def test_a_layout_at_another_rank_is_a_one_line_error():
    """RandLoRA's factors have n·r rows; a layout built at the plain rank would misplace every factor."""
    from lorazoo import ConfigError, Layout, LoraZooError

    layout = Layout.from_shapes([("q", 32, 48)], rank=8)
    with pytest.raises(ConfigError) as info:
        RandLoRAProjection(layout, AdapterConfig(projection="randlora", rank=8))
    message = str(info.value)
    assert isinstance(info.value, LoraZooError) and "\n" not in message
    assert "'q'" in message and "factor rank 8" in message and "= 32" in message
