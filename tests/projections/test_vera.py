"""VeRA: parity with PEFT's VeRA (ΔW, logits, λ gradients), mixed shapes, counts, frozen matrices, options."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from helpers import model_inputs, perturb, tiny_bert, tiny_llama
from safetensors.torch import load_file

from lorazoo import AdapterConfig, ConfigError, Layout, LoraZooError, attach, load_adapter
from lorazoo.projections.vera import VeRAProjection

GOLDEN_SEED0_R8_LLAMA = "ee85825f6627fe5a"  # sha256 prefix of seed-0 vera_A ‖ vera_B (float32 bytes)
MODELS = {"bert": (tiny_bert, ["query", "value"]), "llama": (tiny_llama, "all-linear")}


def peft_vera(kind: str, rank: int):
    from peft import VeraConfig, get_peft_model

    factory, targets = MODELS[kind]
    config = VeraConfig(
        r=rank, target_modules=targets, projection_prng_key=0, save_projection=True, d_initial=0.1, vera_dropout=0.0
    )
    return get_peft_model(factory(0), config)


def peft_layers(peft_model) -> dict[str, torch.nn.Module]:
    prefix = "base_model.model."
    return {
        n[len(prefix) :]: m
        for n, m in peft_model.named_modules()
        if hasattr(m, "vera_lambda_d") and n.startswith(prefix)
    }


def paired_models(kind: str, rank: int = 4):
    """Ours and PEFT's on the same base, with PEFT's frozen matrices and (perturbed) λ's copied into ours."""
    factory, targets = MODELS[kind]
    peft_model = peft_vera(kind, rank)
    g = torch.Generator().manual_seed(5)
    layers = peft_layers(peft_model)
    with torch.no_grad():
        for layer in layers.values():
            layer.vera_lambda_d["default"].add_(0.3 * torch.randn(layer.vera_lambda_d["default"].shape, generator=g))
            layer.vera_lambda_b["default"].add_(0.3 * torch.randn(layer.vera_lambda_b["default"].shape, generator=g))
    ours = attach(factory(0), AdapterConfig(projection="vera", rank=rank, target_modules=targets))
    projection = ours.projection
    assert list(layers) == [e.name for e in ours.layout]
    with torch.no_grad():
        projection.vera_A.copy_(peft_model.base_model.vera_A["default"])
        projection.vera_B.copy_(peft_model.base_model.vera_B["default"])
        projection.lambda_d.copy_(torch.cat([m.vera_lambda_d["default"] for m in layers.values()]))
        projection.lambda_b.copy_(torch.cat([m.vera_lambda_b["default"] for m in layers.values()]))
    ours.cache.invalidate()
    return ours, peft_model, layers


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_matches_peft_vera_delta_logits_and_gradients(kind):
    ours, peft_model, layers = paired_models(kind)
    with torch.no_grad():
        for name, layer in layers.items():
            torch.testing.assert_close(ours.delta_weight(name), layer.get_delta_weight("default"), atol=1e-6, rtol=1e-5)
    inputs = model_inputs(kind)
    ours_logits, peft_logits = ours(**inputs).logits, peft_model(**inputs).logits
    torch.testing.assert_close(ours_logits, peft_logits, atol=1e-5, rtol=0)
    ours_logits.pow(2).mean().backward()
    peft_logits.pow(2).mean().backward()
    r = ours.adapter_config.rank
    grad_d = ours.projection.lambda_d.grad.view(-1, r)
    grad_b = ours.projection.lambda_b.grad.split([e.out_features for e in ours.layout])
    for i, layer in enumerate(layers.values()):
        torch.testing.assert_close(grad_d[i], layer.vera_lambda_d["default"].grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(grad_b[i], layer.vera_lambda_b["default"].grad, atol=1e-5, rtol=1e-4)


def test_mixed_shapes_slice_the_shared_matrices():
    model = attach(tiny_llama(), AdapterConfig(projection="vera", rank=4, target_modules="all-linear"))
    perturb(model)
    p = model.projection
    shapes = {(e.in_features, e.out_features) for e in model.layout}
    assert len(shapes) > 1 and p.vera_A.shape == (4, 64) and p.vera_B.shape == (64, 4)
    lambda_d, b_start = p.lambda_d.view(-1, 4), 0
    for i, e in enumerate(model.layout):
        lambda_b = p.lambda_b[b_start : b_start + e.out_features]
        b_start += e.out_features
        a = torch.diag(lambda_d[i]) @ p.vera_A[:, : e.in_features]
        b = torch.diag(lambda_b) @ p.vera_B[: e.out_features]
        torch.testing.assert_close(model.delta_weight(e.name), b @ a, atol=1e-6, rtol=1e-5)


def test_counts_roberta_base_query_value_r1024():
    layout = Layout.from_shapes([(f"l{i}.{k}", 768, 768) for i in range(12) for k in ("query", "value")], rank=1024)
    projection = VeRAProjection(layout, AdapterConfig(projection="vera", rank=1024))
    assert projection.d == 43_008 == 24 * (1024 + 768)
    assert projection.D == 24 * 1024 * 1536
    assert projection.vera_A.shape == (1024, 768) and projection.vera_B.shape == (768, 1024)


def test_frozen_matrices_are_kaiming_uniform_with_gain_sqrt2_and_pinned():
    model = attach(tiny_llama(), AdapterConfig(projection="vera", rank=8, target_modules="all-linear"))
    a, b = model.projection.vera_A, model.projection.vera_B  # h_max = o_max = 64
    for tensor, bound in ((a, np.sqrt(6 / 64)), (b, np.sqrt(6 / 8))):
        assert tensor.abs().max() <= bound and tensor.abs().max() > 0.95 * bound
        assert abs(tensor.std().item() - bound / np.sqrt(3)) < 0.1 * bound
    assert not any(t.requires_grad for t in (a, b))
    digest = hashlib.sha256(a.numpy().tobytes() + b.numpy().tobytes()).hexdigest()[:16]
    assert digest == GOLDEN_SEED0_R8_LLAMA, digest


def test_init_lambdas_and_zero_delta():
    model = attach(tiny_bert(), AdapterConfig(projection="vera", rank=4, projection_kwargs={"d_initial": 0.5}))
    assert torch.all(model.projection.lambda_d == 0.5) and torch.all(model.projection.lambda_b == 0)
    assert model.projection.scaling == 1.0
    for entry in model.layout:  # A_l = 0.5 · A_sh slice, B_l = 0 → ΔW = 0
        a = model.projection()[entry.a_offset : entry.a_offset + entry.a_numel].view(4, -1)
        torch.testing.assert_close(a, 0.5 * model.projection.vera_A[:, : entry.in_features])
        assert torch.count_nonzero(model.delta_weight(entry.name)) == 0


@pytest.mark.parametrize("save_projection", [False, True])
def test_save_projection_controls_what_is_saved(tmp_path, save_projection):
    kwargs = {"save_projection": save_projection}
    model = attach(tiny_bert(), AdapterConfig(projection="vera", rank=4, projection_kwargs=kwargs))
    perturb(model)
    if save_projection:  # e.g. matrices imported from PEFT: only a saved copy can bring them back
        with torch.no_grad():
            model.projection.vera_A.mul_(-1.0)
    with torch.no_grad():
        expected = model(**model_inputs("bert")).logits
    model.save_adapter(tmp_path)
    keys = set(load_file(str(tmp_path / "adapter.safetensors")))
    saved = {"projection.lambda_d", "projection.lambda_b"}
    assert keys == (saved | {"projection.vera_A", "projection.vera_B"} if save_projection else saved)
    loaded = load_adapter(tiny_bert(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**model_inputs("bert")).logits, expected, atol=0, rtol=0)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"save_projection": "yes"}, "save_projection='yes'"),
        ({"d_initial": "big"}, "d_initial='big'"),
        ({"projection_prng_key": 1}, "unknown option(s) ['projection_prng_key']"),
    ],
)
def test_bad_options(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        attach(tiny_bert(), AdapterConfig(projection="vera", rank=4, projection_kwargs=kwargs))
    assert isinstance(info.value, LoraZooError) and fragment in str(info.value) and "\n" not in str(info.value)


def _saved_for_backward_bytes(model, inputs: dict) -> int:
    """Bytes of the distinct storages autograd keeps for one training forward, beyond the model's own tensors."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in own:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
    return sum(saved.values())


@pytest.mark.parametrize("rank", [4, 64])
def test_training_keeps_no_more_for_backward_than_peft_vera(rank):
    """VeRA's peak memory at PEFT's. The layers apply A_l = diag(λ_d) A_sh as (x A_shᵀ) ⊙ λ_d, so
    autograd keeps PEFT's (tokens × r) and (tokens × o) products and never a formed A_l, B_l (θ_D)."""
    ours, peft_model, _ = paired_models("llama", rank)
    inputs = model_inputs("llama")
    ours_bytes, peft_bytes = _saved_for_backward_bytes(ours, inputs), _saved_for_backward_bytes(peft_model, inputs)
    assert ours_bytes <= peft_bytes, (ours_bytes, peft_bytes)
    layers = peft_layers(peft_model).values()  # and the λ gradients are PEFT's
    for ours_grad, key in (
        (ours.projection.lambda_d.grad, "vera_lambda_d"),
        (ours.projection.lambda_b.grad, "vera_lambda_b"),
    ):
        peft_grad = torch.cat([getattr(m, key)["default"].grad for m in layers])
        torch.testing.assert_close(ours_grad, peft_grad, rtol=1e-4, atol=1e-6)
