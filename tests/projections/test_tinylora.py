"""TinyLoRA against PEFT 0.21's own implementation (peft.tuners.tinylora), fed the same frozen tensors.

Ours and PEFT's are built on two copies of one tiny Llama. PEFT's P (torch's generator) is overwritten with
ours (lorazoo's counter-based generator), its SVD factors with ours (equal anyway on one machine; checked),
and v is set equal; then ΔW, outputs and gradients must agree within 1e-5 and the trainable counts exactly.
``parity`` returns the differences, so the same comparison is also shown to fail on a perturbed tensor.
"""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_llama

from lorazoo import AdapterConfig, ConfigError, attach, count_parameters
from lorazoo.projections.tinylora import tying_groups

peft = pytest.importorskip("peft")
from peft import TinyLoraConfig, get_peft_model  # noqa: E402
from peft.tuners.tinylora.layer import TinyLoraLayer  # noqa: E402

TARGETS = ["q_proj", "v_proj"]
IDS = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(4))


def ours_model(weight_tying: float = 0.0, u: int = 8, r: int = 2, targets=TARGETS):
    config = AdapterConfig(
        projection="tinylora", rank=r, target_modules=targets, projection_kwargs={"u": u, "weight_tying": weight_tying}
    )
    return attach(tiny_llama(0), config)


def peft_layers(peft_model) -> dict[str, TinyLoraLayer]:
    """PEFT's TinyLoRA layers keyed by lorazoo's module names (PEFT prefixes base_model.model.)."""
    return {
        name.removeprefix("base_model.model."): module
        for name, module in peft_model.named_modules()
        if isinstance(module, TinyLoraLayer)
    }


def twins(weight_tying: float = 0.0, u: int = 8, r: int = 2, targets=TARGETS):
    """lorazoo's and PEFT's TinyLoRA on the same base, with PEFT's P and SVD factors set to ours and v equal."""
    ours = ours_model(weight_tying, u, r, targets)
    theirs = get_peft_model(
        tiny_llama(0), TinyLoraConfig(r=r, u=u, weight_tying=weight_tying, target_modules=targets)
    ).eval()
    projection = ours.projection
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        projection.v.copy_(torch.randn(projection.v.shape, generator=g))
        layers = peft_layers(theirs)
        assert list(layers) == [e.name for e in ours.layout]
        for index, (layer, (u_r, s, vh)) in enumerate(zip(layers.values(), projection.svd_factors())):
            a, b = s.sqrt()[:, None] * vh, u_r * s.sqrt()
            # PEFT's own SVD of the same weight gives the same √Σ split (the one source of truth for the formula)
            torch.testing.assert_close(layer.tinylora_A["default"], a, atol=1e-6, rtol=0)
            torch.testing.assert_close(layer.tinylora_B["default"], b, atol=1e-6, rtol=0)
            layer.tinylora_A["default"].copy_(a)
            layer.tinylora_B["default"].copy_(b)
            layer.tinylora_P["default"].copy_(projection.P[index])
            group = int(projection.group_of[index])
            layer.tinylora_v["default"][layer._tinylora_v_key["default"]].copy_(projection.v[group])
    return ours, theirs


def parity(ours, theirs) -> dict[str, float]:
    """Max |difference| of ΔW, logits and v gradients between the twins, and their trainable counts."""
    layers = peft_layers(theirs)
    with torch.no_grad():
        delta = max(
            float((ours.delta_weight(name) - layer.get_delta_weight("default")).abs().max())
            for name, layer in layers.items()
        )
    ours_logits, their_logits = ours(input_ids=IDS).logits, theirs(input_ids=IDS).logits
    ours_logits.pow(2).mean().backward()
    their_logits.pow(2).mean().backward()
    projection, their_v = ours.projection, theirs.base_model.tinylora_v["default"]
    grads = max(
        float((projection.v.grad[group] - their_v[str(group)].grad).abs().max())
        for group in range(projection.v.shape[0])
    )
    return {
        "delta": delta,
        "logits": float((ours_logits - their_logits).detach().abs().max()),
        "grad": grads,
        "ours_trainable": sum(p.numel() for p in ours.parameters() if p.requires_grad),
        "their_trainable": sum(p.numel() for p in theirs.parameters() if p.requires_grad),
    }


@pytest.mark.parametrize("weight_tying, expected", [(0.0, 32), (0.5, 16), (1.0, 8)])
def test_equals_peft_tinylora_and_its_counts(weight_tying, expected):
    result = parity(*twins(weight_tying))
    assert result["delta"] < 1e-5 and result["logits"] < 1e-5 and result["grad"] < 1e-5, result
    assert result["ours_trainable"] == result["their_trainable"] == expected


def test_equals_peft_on_every_linear_module():
    result = parity(*twins(weight_tying=0.3, u=3, r=3, targets="all-linear"))
    assert result["delta"] < 1e-5 and result["logits"] < 1e-5 and result["grad"] < 1e-5, result
    assert result["ours_trainable"] == result["their_trainable"]


def _perturb_p(ours):
    ours.projection.P[1, 0, 0, 1] += 0.5


def _perturb_sigma(ours):
    ours.projection.svd_S[0] *= 1.01


def _perturb_u(ours):
    ours.projection.svd_U.neg_()  # a sign flip of U alone: what a recomputed SVD may hand back


def _perturb_groups(ours):
    ours.projection.group_of[0] = 1


def _transposed_r(ours):
    ours.projection.P.copy_(ours.projection.P.transpose(-1, -2).clone())  # the formula with Rᵀ in place of R


@pytest.mark.parametrize("perturb", [_perturb_p, _perturb_sigma, _perturb_u, _perturb_groups, _transposed_r])
def test_the_parity_check_fails_on_a_perturbed_frozen_tensor(perturb):
    ours, theirs = twins(0.0)
    with torch.no_grad():
        perturb(ours)
    ours.cache.invalidate()
    result = parity(ours, theirs)
    assert result["delta"] > 1e-4 and result["logits"] > 1e-5, result


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 28])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
def test_tying_groups_follow_peft_for_every_module_count_and_ratio(n, ratio):
    """PEFT's grouping rule (TinyLoraModel._create_and_replace) written out independently."""
    num_groups = max(1, round(n * (1.0 - ratio)))
    size = max(1, n // num_groups)
    assert tying_groups(n, ratio) == [min(i // size, num_groups - 1) for i in range(n)]
    assert len(set(tying_groups(n, ratio))) == num_groups


def test_projection_tensors_golden_checksum_and_distribution():
    """P for (seed 0, tiny Llama q,v, r = 2, u = 8) is pinned: regenerated identically on any machine."""
    projection = ours_model().projection
    p = projection.P
    assert p.shape == (4, 8, 2, 2)
    torch.testing.assert_close(
        p.flatten()[:4], torch.tensor([0.4200122654438019, 0.30266040563583374, 0.1225329115986824, 0.9939272999763489])
    )
    assert float(p.double().sum()) == pytest.approx(-9.921108653768897, abs=1e-5)
    other = attach(
        tiny_llama(0),
        AdapterConfig(projection="tinylora", rank=2, target_modules=TARGETS, seed=1, projection_kwargs={"u": 8}),
    ).projection.P
    assert not torch.equal(p, other)


def test_v_starts_at_zero_or_uniform_as_peft():
    assert torch.count_nonzero(ours_model().projection.v) == 0
    config = AdapterConfig(
        projection="tinylora",
        rank=2,
        target_modules=TARGETS,
        projection_kwargs={"u": 8, "init_weights": "uniform", "init_v_bound": 0.05},
    )
    v = attach(tiny_llama(0), config).projection.v
    assert bool((v.abs() <= 0.05).all()) and torch.count_nonzero(v) == v.numel()


@pytest.mark.parametrize("weight_tying, expected", [(0.0, 32), (1.0, 8)])
def test_meta_device_count_needs_no_weights(weight_tying, expected):
    fields = {"model_type": "llama", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64}
    fields |= {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    config = AdapterConfig(
        projection="tinylora", rank=2, target_modules=TARGETS, projection_kwargs={"u": 8, "weight_tying": weight_tying}
    )
    assert count_parameters(fields, config, task_type="causal_lm")["trainable"] == expected


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"weight_tying": 1.5}, "weight_tying=1.5 is invalid; valid: a number in [0, 1]"),
        ({"weight_tying": -0.1}, "weight_tying=-0.1 is invalid"),
        ({"weight_tying": True}, "weight_tying=True is invalid"),
        ({"u": 0}, "u=0 is invalid"),
        ({"init_weights": False}, "init_weights=False is invalid; valid: [True, 'uniform']"),
        ({"init_v_bound": 0.0}, "init_v_bound=0.0 is invalid"),
        ({"projection_seed": 42}, "unknown option(s) ['projection_seed']"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        attach(
            tiny_llama(0),
            AdapterConfig(projection="tinylora", rank=2, target_modules=TARGETS, projection_kwargs=kwargs),
        )
    assert fragment in str(info.value) and "\n" not in str(info.value)
