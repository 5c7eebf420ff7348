"""LoRA-XS against its formula rebuilt with plain torch ops, and against the authors' construction.

The authors (MohammadrezaBanaei/LoRA-XS@24efae6, utils/initialization_utils.py) take the SVD of Wᵀ, fold Σ
into its left factor and make that lora_A (Σ_r V_rᵀ of W: the input side), lora_B = U_r, R between them,
N(0, 1e-5) at init, PEFT's α / r scale on top. The reference here multiplies those matrices out by hand
from the adapter's saved U_r, Σ_r, V_rᵀ (the frozen tensors it trains with), so ΔW, outputs and gradients
are compared for the same frozen tensors; ``reference_delta`` takes them as arguments, so the same check
is shown to fail when one of them, or the side Σ sits on, is changed.
"""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_llama

from lorazoo import AdapterConfig, attach

IDS = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(4))
RANK, ALPHA = 4, 8.0


def make(seed: int = 0, targets="all-linear", **kwargs):
    config = AdapterConfig(
        projection="loraxs", rank=RANK, alpha=ALPHA, target_modules=targets, seed=seed, projection_kwargs=kwargs
    )
    return attach(tiny_llama(0), config)


def reference_delta(u, s, vh, r_matrix, sigma_on_input: bool = True) -> torch.Tensor:
    """(α / r) · lora_B R lora_A with the authors' lora_A = Σ_r V_rᵀ and lora_B = U_r (or Σ on the output side)."""
    lora_a, lora_b = (torch.diag(s) @ vh, u) if sigma_on_input else (vh, u @ torch.diag(s))
    return ALPHA / RANK * (lora_b @ r_matrix @ lora_a)


def reference_outputs(model, r_matrices, **delta_kwargs):
    """Logits of a plain copy of the base whose adapted weights are W + reference ΔW (functional_call)."""
    base = tiny_llama(0)
    weights = dict(base.named_parameters())
    for (u, s, vh), r_matrix, entry in zip(model.projection.svd_factors(), r_matrices, model.layout):
        key = f"{entry.name}.weight"
        weights[key] = weights[key] + reference_delta(u, s, vh, r_matrix, **delta_kwargs)
    return torch.func.functional_call(base, weights, (), {"input_ids": IDS}).logits


def trained_like(model) -> None:
    with torch.no_grad():
        model.projection.R.copy_(torch.randn(model.projection.R.shape, generator=torch.Generator().manual_seed(5)))
    model.cache.invalidate()


def test_delta_outputs_and_gradients_equal_the_formula():
    model = make()
    trained_like(model)
    r_ref = model.projection.R.detach().clone().requires_grad_(True)
    for (u, s, vh), r_matrix, entry in zip(model.projection.svd_factors(), r_ref, model.layout):
        torch.testing.assert_close(
            model.delta_weight(entry.name), reference_delta(u, s, vh, r_matrix), atol=1e-6, rtol=1e-5
        )
    ours = model(input_ids=IDS).logits
    expected = reference_outputs(model, r_ref)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    ours.pow(2).mean().backward()
    expected.pow(2).mean().backward()
    torch.testing.assert_close(model.projection.R.grad, r_ref.grad, atol=1e-5, rtol=1e-4)
    assert model.num_parameters()["trainable"] == len(model.layout) * RANK * RANK


@pytest.mark.parametrize("change", ["sigma_side", "sigma", "sign", "R"])
def test_the_formula_check_fails_when_a_frozen_tensor_or_the_split_changes(change):
    model = make()
    trained_like(model)
    r_ref = model.projection.R.detach().clone()
    kwargs = {}
    with torch.no_grad():
        if change == "sigma_side":
            kwargs = {"sigma_on_input": False}
        elif change == "sigma":
            model.projection.svd_S[1] *= 1.05
        elif change == "sign":
            model.projection.svd_Vh[: model.layout[0].in_features].neg_()  # first singular vector's sign flipped
        else:
            r_ref[0, 0, 1] += 0.1
    model.cache.invalidate()
    with torch.no_grad():
        # the reference reads the untouched SVD for "sigma"/"sign": rebuild it from a fresh twin's factors
        twin = make()
        trained_like(twin)
        factors = twin.projection.svd_factors()
        mismatch = max(
            float((model.delta_weight(e.name) - reference_delta(u, s, vh, r, **kwargs)).abs().max())
            for (u, s, vh), r, e in zip(factors, r_ref, model.layout)
        )
    assert mismatch > 1e-4


def test_frozen_factors_are_the_truncated_svd_with_sigma_on_the_input_side_as_the_authors():
    model = make()
    base = tiny_llama(0)
    for (u, s, vh), entry in zip(model.projection.svd_factors(), model.layout):
        weight = base.get_submodule(entry.name).weight.detach()
        eye = torch.eye(RANK)
        torch.testing.assert_close(u.T @ u, eye, atol=1e-5, rtol=0)
        torch.testing.assert_close(vh @ vh.T, eye, atol=1e-5, rtol=0)
        assert bool((s[:-1] >= s[1:]).all())
        torch.testing.assert_close(s, torch.linalg.svdvals(weight)[:RANK], atol=1e-5, rtol=1e-5)
        # the authors' construction: SVD of Wᵀ, encoder = (u · diag(s))[:, :r] → lora_A = encoderᵀ, lora_B = vh[:r]ᵀ
        u_t, s_t, vh_t = torch.linalg.svd(weight.T, full_matrices=False)
        lora_a = (u_t @ torch.diag(s_t))[:, :RANK].T
        lora_b = vh_t[:RANK].T
        signs = torch.sign((lora_b * u).sum(0))  # each singular pair may come back with either sign
        # two SVD calls (of W and of Wᵀ) agree to ~1e-4 on a random matrix's close singular values; Σ on the
        # other side would be off by a factor σ_i (0.1-0.3 here)
        torch.testing.assert_close(lora_b, u * signs, atol=5e-4, rtol=0)
        torch.testing.assert_close(lora_a, signs[:, None] * (torch.diag(s) @ vh), atol=5e-4, rtol=0)


@pytest.mark.parametrize("rank", [1, 16])
def test_meta_device_count_is_modules_times_r_squared_without_weights(rank):
    from lorazoo import count_parameters

    config = AdapterConfig(projection="loraxs", rank=rank, target_modules="all-linear")
    counts = count_parameters("llama-2-7b", config)  # 32 layers × 7 Linears, no weights, no SVD
    assert counts["num_modules"] == 224 and counts["trainable"] == 224 * rank * rank


def test_r_starts_as_the_authors_small_gaussian_with_a_golden_checksum():
    r_init = make(targets=["q_proj", "v_proj"]).projection.R.detach()
    assert r_init.shape == (4, RANK, RANK)
    assert 0.5e-5 < float(r_init.std()) < 1.5e-5  # N(0, 1e-5)
    torch.testing.assert_close(
        r_init.flatten()[:3],
        torch.tensor([-4.785913461091695e-06, -2.0555951778078452e-05, 4.47282263849047e-06]),
        atol=1e-12,
        rtol=1e-6,
    )
    assert not torch.equal(r_init, make(seed=1, targets=["q_proj", "v_proj"]).projection.R.detach())
