"""Every registered projection × every invariant, on tiny BERT and Llama models.

The invariants are the design notes' list (zero ΔW at init, frozen base, θ_D = P θ_d, merge, save/load,
PEFT export, seeding, checkpointing, bf16). New projections are picked up from the registry
automatically, with the tiny-model kwargs they declare themselves (``Projection.tiny_case``).
"""

from __future__ import annotations

import pytest
import torch
from helpers import PROJECTION_CASES, TINY_MODELS, TINY_TARGETS, model_inputs, perturb
from safetensors.torch import load_file

from lorazoo import AdapterConfig, attach, load_adapter, projection_names
from lorazoo.adapted_layers import AdaptedLinear
from lorazoo.integrity import regenerated
from lorazoo.projections import get_projection_class

PROJECTIONS = projection_names()
ZERO_AT_INIT = {p for p in PROJECTIONS if get_projection_class(p).zero_at_init}
KINDS = list(TINY_MODELS)


def make(projection: str, kind: str = "bert", seed: int = 0, base_seed: int = 0, **overrides):
    base = TINY_MODELS[kind](base_seed)
    cfg = AdapterConfig(
        projection=projection,
        rank=4,
        target_modules=TINY_TARGETS[kind],
        seed=seed,
        projection_kwargs=PROJECTION_CASES[projection],
        **overrides,
    )
    return attach(base, cfg)


def logits(model, kind):
    return model(**model_inputs(kind)).logits


def test_zero_at_init_is_declared_by_the_methods_that_define_it():
    assert {"lora", "tied", "vera", "prolora"} <= ZERO_AT_INIT
    assert not {"unilora", "vblora", "gaussian", "fastfood"} & ZERO_AT_INIT


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_every_tiny_case_names_declared_options(projection):
    declared = set(get_projection_class(projection).defaults)
    assert set(PROJECTION_CASES[projection]) <= declared, f"{projection}.tiny_case names undeclared options"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("projection", PROJECTIONS)
class TestInvariants:
    def test_zero_delta_at_init_and_counts(self, projection, kind):
        model = make(projection, kind)
        reference = TINY_MODELS[kind](0)
        theta_D = model.projection()
        assert theta_D.shape == (model.layout.D,)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        counts = model.num_parameters()
        assert counts["trainable"] == model.projection.d == trainable
        assert counts["D"] == sum(e.numel for e in model.layout)
        if projection in ZERO_AT_INIT:
            for entry in model.layout:
                assert torch.count_nonzero(model.delta_weight(entry.name)) == 0
            torch.testing.assert_close(logits(model, kind), logits(reference, kind), atol=1e-6, rtol=0)

    def test_only_adapter_trains_and_base_stays_bit_identical(self, projection, kind):
        model = make(projection, kind)
        frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        assert all(n.startswith("adapters.") for n, p in model.named_parameters() if p.requires_grad)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-2)
        start = [p.detach().clone() for p in params]
        model.train()
        for _ in range(3):
            loss = logits(model, kind).float().pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        assert any(not torch.equal(a, p) for a, p in zip(start, params)), "no adapter parameter moved"
        for name, p in model.named_parameters():
            if name in frozen_before:
                assert torch.equal(p, frozen_before[name]), f"frozen {name} changed"

    def test_linear_projection_matrix(self, projection, kind):
        model = make(projection, kind)
        perturb(model)
        matrix = model.projection.matrix()
        if not model.projection.is_linear:
            assert matrix is None
            return
        dense = matrix.to_dense() if matrix.is_sparse else matrix
        assert dense.shape == (model.layout.D, model.projection.d)
        torch.testing.assert_close(dense @ model.projection.theta_d(), model.projection(), atol=1e-5, rtol=1e-5)

    def test_merge_unmerge_and_unload(self, projection, kind):
        model = make(projection, kind)
        perturb(model)
        weights = {layer.module_name: layer.base_layer.weight.detach().clone() for layer in model.adapted_layers()}
        with torch.no_grad():
            unmerged = logits(model, kind)
            model.merge()
            merged = logits(model, kind)
            torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=0)
            model.unmerge()
            for layer in model.adapted_layers():
                torch.testing.assert_close(layer.base_layer.weight, weights[layer.module_name], atol=1e-6, rtol=0)
            plain = model.merge_and_unload()
            assert not any(isinstance(m, AdaptedLinear) for m in plain.modules())
            assert type(plain).__module__.startswith("transformers.")
            torch.testing.assert_close(plain(**model_inputs(kind)).logits, unmerged, atol=1e-4, rtol=0)

    def test_disabled_gives_base_outputs(self, projection, kind):
        model = make(projection, kind)
        perturb(model)
        reference = logits(TINY_MODELS[kind](0), kind)
        with torch.no_grad(), model.disabled():
            torch.testing.assert_close(logits(model, kind), reference, atol=0, rtol=0)
        assert not torch.allclose(logits(model, kind), reference, atol=1e-6)

    def test_save_load_round_trip(self, projection, kind, tmp_path):
        model = make(projection, kind)
        perturb(model)
        expected = logits(model, kind)
        model.save_adapter(tmp_path)
        tensors = load_file(str(tmp_path / "adapter.safetensors"))
        assert all(k.startswith(("projection.", "modules_to_save.")) for k in tensors)
        base_numel = sum(p.numel() for p in TINY_MODELS[kind](0).parameters())
        assert sum(t.numel() for t in tensors.values()) < base_numel / 4
        loaded = load_adapter(TINY_MODELS[kind](0), tmp_path)
        torch.testing.assert_close(logits(loaded, kind), expected, atol=0, rtol=0)

    def test_export_to_peft_lora(self, projection, kind, tmp_path):
        from peft import PeftModel

        model = make(projection, kind)
        perturb(model)
        with torch.no_grad():
            expected = logits(model, kind)
        model.export_peft_lora(tmp_path)
        peft_model = PeftModel.from_pretrained(TINY_MODELS[kind](0), tmp_path).eval()
        with torch.no_grad():
            torch.testing.assert_close(peft_model(**model_inputs(kind)).logits, expected, atol=1e-5, rtol=0)

    def test_seed_determines_structures_and_init(self, projection, kind):
        a, b, c = (make(projection, kind, seed=s) for s in (0, 0, 1))
        state_a, state_b, state_c = (  # lazy structures (gaussian, randlora) count through ``regenerated``
            m.projection.state_dict(keep_vars=False) | dict(m.projection.named_buffers()) | regenerated(m.projection)
            for m in (a, b, c)
        )
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), key
        assert not torch.equal(a.projection(), c.projection()) or projection in ZERO_AT_INIT
        assert any(not torch.equal(state_a[k], state_c[k]) for k in state_a), "seed has no effect"

    def test_gradient_checkpointing_gives_same_gradients(self, projection, kind):
        grads = []
        for checkpointing in (False, True):
            model = make(projection, kind, dropout=0.0)
            perturb(model)
            model.train()
            if checkpointing:
                model.gradient_checkpointing_enable()
            logits(model, kind).float().pow(2).mean().backward()
            grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
        for g0, g1 in zip(*grads):
            torch.testing.assert_close(g0, g1, atol=1e-6, rtol=1e-5)

    def test_bf16_base_with_fp32_adapter(self, projection, kind):
        model = make(projection, kind)
        perturb(model)
        with torch.no_grad():
            fp32 = logits(model, kind)
        model.base_model.to(torch.bfloat16)
        for _, p in model.projection.named_parameters():
            assert p.dtype == torch.float32
        out = logits(model, kind)
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), fp32, atol=0.1, rtol=0.05)
        out.float().pow(2).mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
