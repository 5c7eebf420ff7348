"""NOLA against its formula rebuilt with plain torch (ΔW, logits, coefficient gradients), init, bases, streaming."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from helpers import model_inputs, perturb, tiny_bert, tiny_llama

from lorazoo import AdapterConfig, ConfigError, LoraZooError, attach, count_parameters
from lorazoo.projections import rng

GOLDEN_SEED0_K6_LLAMA = "7f3106c672e1dc47"  # sha256 prefix of seed-0 A⁰ ‖ first ‖ last bases (float32 bytes)
K = 6


def make(kind: str = "llama", k: int = K, seed: int = 0, **kwargs):
    base, targets = (tiny_llama(0), "all-linear") if kind == "llama" else (tiny_bert(0), ["query", "value"])
    config = AdapterConfig(
        projection="nola",
        rank=4,
        alpha=8.0,
        seed=seed,
        target_modules=targets,
        projection_kwargs={"num_basis": k, **kwargs},
    )
    return attach(base, config)


def formula_factors(model, coefficients: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A_l = A⁰_l + Σ α_i A_i, B_l = Σ β_j B_j with the documented bases: counters k·o + i·n of one stream,
    U(±1)/√k, and A⁰ ~ U(±1/√in) (the stream lora_style_init draws for 'nola/A0')."""
    seed, k = model.adapter_config.seed, model.projection.k
    c = coefficients.view(-1, k)
    a0 = rng.uniform(seed, "nola/A0", model.layout.D, -1.0, 1.0)
    out = {}
    for index, e in enumerate(model.layout):
        parts = []
        for s, (offset, n, shape) in enumerate(
            [(e.a_offset, e.a_numel, (e.rank, e.in_features)), (e.b_offset, e.b_numel, (e.out_features, e.rank))]
        ):
            bases = torch.from_numpy(rng.uniform(seed, "nola/bases", k * n, -1.0, 1.0, start=k * offset)).float()
            bases = bases.view(k, *shape) / math.sqrt(k)
            parts.append(torch.einsum("i,ioj->oj", c[2 * index + s], bases))
        offset_a = torch.from_numpy(a0[e.a_offset : e.a_offset + e.a_numel]).float().view(e.rank, e.in_features)
        out[e.name] = (parts[0] + offset_a / math.sqrt(e.in_features), parts[1])
    return out


def formula_logits(model, coefficients: torch.Tensor, inputs: dict) -> torch.Tensor:
    """The base with W_l + (α/r) B_l A_l, called through torch.func with plain tensors (no lorazoo layer)."""
    reference = tiny_llama(0) if "llama" in type(model.base_model).__name__.lower() else tiny_bert(0)
    scale = model.adapter_config.alpha / model.adapter_config.rank
    weights = dict(reference.named_parameters())
    for name, (a, b) in formula_factors(model, coefficients).items():
        weights[f"{name}.weight"] = weights[f"{name}.weight"].detach() + scale * b @ a
    return torch.func.functional_call(reference, weights, (), inputs).logits


@pytest.mark.parametrize("kind", ["llama", "bert"])
@pytest.mark.parametrize("cache", [True, False])
def test_matches_the_formula_delta_logits_and_gradients(kind, cache):
    model = make(kind, **({} if cache else {"cache_max_elements": 0}))
    assert model.projection.cached is cache
    perturb(model, scale=0.3)
    theta = model.projection.coefficients
    expected = formula_factors(model, theta.detach())
    scale = model.adapter_config.alpha / model.adapter_config.rank
    with torch.no_grad():
        for name, (a, b) in expected.items():
            torch.testing.assert_close(model.delta_weight(name), scale * b @ a, atol=1e-6, rtol=1e-5)
    inputs = model_inputs(kind)
    ours = model(**inputs).logits
    reference_theta = theta.detach().clone().requires_grad_(True)
    theirs = formula_logits(model, reference_theta, inputs)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    ours.pow(2).mean().backward()
    theirs.pow(2).mean().backward()
    torch.testing.assert_close(theta.grad, reference_theta.grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("perturbed", ["basis", "offset", "scale"])
def test_formula_comparison_fails_when_a_basis_or_the_formula_is_perturbed(perturbed, monkeypatch):
    from lorazoo.projections.nola import NOLAProjection

    model = make()
    perturb(model, scale=0.3)
    if perturbed == "basis":
        original = NOLAProjection.basis_rows

        def shifted(self, segment, start, stop, dtype, device):
            rows = original(self, segment, start, stop, dtype, device)
            if segment == 1 and start == 0:
                rows[0, 0] += 0.5
            return rows

        monkeypatch.setattr(NOLAProjection, "basis_rows", shifted)
    elif perturbed == "offset":
        monkeypatch.setattr(NOLAProjection, "frozen_offset", lambda self: torch.zeros(self.D))
    model.cache.invalidate()
    scale = model.adapter_config.alpha / model.adapter_config.rank * (2.0 if perturbed == "scale" else 1.0)
    with torch.no_grad():
        worst = max(
            (model.delta_weight(n) - scale * b @ a).abs().max().item()
            for n, (a, b) in formula_factors(model, model.projection.coefficients.detach()).items()
        )
    assert worst > 1e-4


def test_init_is_zero_delta_with_a_frozen_kaiming_offset_and_beta_trains_first():
    model = make()
    p = model.projection
    assert torch.count_nonzero(p.coefficients) == 0 and p.d == 2 * K * len(model.layout)
    theta_D = p().detach()
    for e in model.layout:
        a = theta_D[e.a_offset : e.a_offset + e.a_numel]
        assert torch.count_nonzero(theta_D[e.b_offset : e.b_offset + e.b_numel]) == 0
        assert 0.9 / math.sqrt(e.in_features) < a.abs().max() <= 1 / math.sqrt(e.in_features)
        assert torch.count_nonzero(model.delta_weight(e.name)) == 0
    model(**model_inputs("llama")).logits.pow(2).mean().backward()
    grad = p.coefficients.grad.view(-1, 2, K)
    assert torch.count_nonzero(grad[:, 0]) == 0 and torch.count_nonzero(grad[:, 1]) > 0  # α: 0 (B = 0); β: ≠ 0


def test_bases_are_pinned_seeded_and_never_saved(tmp_path):
    from safetensors.torch import load_file

    model = make()
    structures = model.projection.structure_tensors()
    digest = hashlib.sha256(b"".join(structures[k].numpy().tobytes() for k in sorted(structures))).hexdigest()[:16]
    assert digest == GOLDEN_SEED0_K6_LLAMA, digest
    assert not torch.equal(make(seed=1).projection.structure_tensors()["first_bases"], structures["first_bases"])
    perturb(model)
    model.save_adapter(tmp_path)
    assert set(load_file(str(tmp_path / "adapter.safetensors"))) == {"projection.coefficients"}


def test_meta_device_count_allocates_only_the_coefficients():
    cfg = AdapterConfig(projection="nola", rank=16, target_modules=["q_proj", "v_proj"])
    counts = count_parameters("llama-2-7b", cfg)
    assert counts["trainable"] == 64 * 2 * 512  # 32 layers × (q, v) × (α, β) × k = 512
    assert counts["D"] == 64 * 16 * (4096 + 4096)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"num_basis": 0}, "num_basis=0"), ({"num_basis": "many"}, "num_basis='many'"), ({"k": 4}, "unknown option")],
)
def test_bad_options_are_one_line_errors(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        attach(tiny_bert(), AdapterConfig(projection="nola", rank=4, projection_kwargs=kwargs))
    assert isinstance(info.value, LoraZooError) and fragment in str(info.value) and "\n" not in str(info.value)
