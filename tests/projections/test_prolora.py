"""PRoLoRA: ΔW against the paper formula rebuilt with torch.roll / cat, the parameter formula, u = r ≡ LoRA
(init, gradients and a training step bit for bit), rectified init, zero ΔW at init, option errors."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import model_inputs, perturb, tiny_bert, tiny_llama

from lorazoo import AdapterConfig, ConfigError, Layout, attach
from lorazoo.projections import build_projection

MODELS = {"bert": (tiny_bert, ["query", "value"]), "llama": (tiny_llama, "all-linear")}


def make(kind: str = "bert", rank: int = 4, alpha: float | None = None, seed: int = 0, **kwargs):
    factory, targets = MODELS[kind]
    cfg = AdapterConfig(
        projection="prolora", rank=rank, alpha=alpha, target_modules=targets, seed=seed, projection_kwargs=kwargs
    )
    return attach(factory(0), cfg)


def paper_factors(theta: torch.Tensor, h: int, o: int, r: int, u: int, m: int, n: int):
    """A_l = [A_s ; A_u], B_l = [B_s | B_u] from one layer's θ_d = [A_0, A_u, B_0, B_u] (Wang et al. 2024)."""
    R, ca, cb = r - u, math.ceil(h / m), math.ceil(o / n)
    a0, au, b0, bu = theta.split([R * ca, u * h, cb * R, o * u])
    a0, au, b0, bu = a0.view(R, ca), au.view(u, h), b0.view(cb, R), bu.view(o, u)
    sa, sb = max(R // m, 1), max(R // n, 1)
    a_s = torch.cat([torch.roll(a0, -k * sa, dims=0) for k in range(m)], dim=1)[:, :h]
    b_s = torch.cat([torch.roll(b0, -k * sb, dims=1) for k in range(n)], dim=0)[:o]
    return torch.cat([a_s, au], dim=0), torch.cat([b_s, bu], dim=1)


def layer_numel(h: int, o: int, r: int, u: int, m: int, n: int) -> int:
    return u * (h + o) + (r - u) * (math.ceil(h / m) + math.ceil(o / n))


@pytest.mark.parametrize(
    "kind, rank, u, m, n",
    [
        ("bert", 4, 1, 2, 2),
        ("bert", 8, 2, 3, 5),  # ⌈32/3⌉ = 11, ⌈32/5⌉ = 7: chunks cut back to h, o
        ("llama", 4, 1, 2, 2),  # GQA k/v: out 16
        ("llama", 6, 0, 4, 3),  # no unshared rank; s_A = 1, s_B = 2
        ("llama", 4, 2, 1, 1),  # no broadcast: partial sharing only
    ],
)
def test_delta_weight_equals_paper_formula(kind, rank, u, m, n):
    model = make(kind, rank=rank, alpha=2.0 * rank + 1, unshared_rank=u, m=m, n=n)
    perturb(model, scale=0.3)
    theta = model.projection.theta.detach()
    scale = (2.0 * rank + 1) / rank
    start = 0
    for e in model.layout:
        size = layer_numel(e.in_features, e.out_features, rank, u, m, n)
        a, b = paper_factors(theta[start : start + size], e.in_features, e.out_features, rank, u, m, n)
        start += size
        with torch.no_grad():
            torch.testing.assert_close(model.delta_weight(e.name), scale * b @ a, atol=1e-6, rtol=1e-5)
    assert start == theta.numel() == model.projection.d


def test_parameter_formula_and_roberta_base_count():
    shapes = [(f"layer.{i}.{kind}", 768, 768) for i in range(12) for kind in ("query", "value")]
    layout = Layout.from_shapes(shapes, rank=8)
    projection = build_projection(
        layout, AdapterConfig(projection="prolora", rank=8, projection_kwargs={"unshared_rank": 1, "m": 2, "n": 2})
    )
    assert projection.d == 24 * (1 * 1536 + 7 * (384 + 384)) == 165_888  # LoRA r = 8: 294,912
    llama = make("llama", rank=4, unshared_rank=1, m=3, n=5)
    assert llama.projection.d == sum(layer_numel(e.in_features, e.out_features, 4, 1, 3, 5) for e in llama.layout)


def test_zero_delta_and_rectified_init():
    model = make("bert", rank=8, unshared_rank=2, m=4, n=2)
    for e in model.layout:
        assert torch.count_nonzero(model.delta_weight(e.name)) == 0
    theta = model.projection.theta.detach()
    h = o = 32
    R, ca = 6, 8  # shared rank r − u, A_0 columns ⌈h/m⌉
    first = theta[: layer_numel(h, o, 8, 2, 4, 2)]
    a_part, b_part = first[: R * ca + 2 * h], first[R * ca + 2 * h :]
    bound = 1 / math.sqrt(h)  # FULL h, not h/m: 1/√8 would be twice as wide
    assert a_part.abs().max() <= bound and a_part.abs().max() > 0.8 * bound
    assert torch.count_nonzero(b_part) == 0
    # the values are LoRA's init (same seed, same counters) at each parameter's first position in θ_D
    lora = attach(tiny_bert(0), AdapterConfig(projection="lora", rank=8, target_modules=["query", "value"]))
    a_pro, a_lora = model.projection()[: 8 * h].view(8, h), lora.projection()[: 8 * h].view(8, h)
    assert torch.equal(a_pro[R:], a_lora[R:]) and torch.equal(a_pro[:R, :ca], a_lora[:R, :ca])


def test_unshared_rank_equal_to_rank_is_lora_bit_for_bit():
    kwargs = {"unshared_rank": 4, "m": 3, "n": 2}
    models = {}
    for projection in ("lora", "prolora"):
        cfg = AdapterConfig(
            projection=projection,
            rank=4,
            alpha=8,
            target_modules="all-linear",
            seed=3,
            projection_kwargs=kwargs if projection == "prolora" else {},
        )
        models[projection] = attach(tiny_llama(0), cfg)
    lora, pro = models["lora"], models["prolora"]
    assert pro.projection.identity and pro.projection.d == lora.projection.d
    assert torch.equal(pro.projection(), lora.projection())
    optimizers = {
        k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2) for k, m in models.items()
    }
    for _ in range(2):
        outputs = {}
        for key, model in models.items():
            outputs[key] = model(**model_inputs("llama")).logits
            outputs[key].pow(2).mean().backward()
        assert torch.equal(outputs["lora"], outputs["prolora"])
        assert torch.equal(lora.projection.theta.grad, pro.projection.theta.grad)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad()
    assert torch.equal(pro.projection(), lora.projection())
    assert torch.count_nonzero(pro.projection()) > torch.count_nonzero(lora.projection.lora_init())  # B moved


def test_shared_parts_receive_summed_gradients():
    """A_0 entries are copied m times: their gradient is the sum over copies (one scatter-add)."""
    model = make("bert", rank=4, unshared_rank=1, m=2, n=2)
    perturb(model, scale=0.3)
    theta_D = model.projection()
    weights = torch.randn(theta_D.shape, generator=torch.Generator().manual_seed(0))
    (theta_D * weights).sum().backward()
    dense = model.projection.matrix().to_dense()
    assert set(dense.unique().tolist()) == {0.0, 1.0} and (dense.sum(1) == 1).all()
    torch.testing.assert_close(model.projection.theta.grad, dense.T @ weights, atol=1e-5, rtol=1e-5)
    assert set(dense.sum(0).unique().tolist()) == {1.0, 2.0}  # A_u, B_u once; A_0 m = 2 times, B_0 n = 2 times


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"unshared_rank": 5}, r"unshared_rank=5 .*0\.\.4"),
        ({"unshared_rank": -1}, "unshared_rank=-1"),
        ({"unshared_rank": 1.0}, "unshared_rank=1.0"),
        ({"m": 0}, "m=0"),
        ({"n": "2"}, "n='2'"),
        ({"k": 2}, "unknown option"),
    ],
)
def test_bad_options_are_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make("bert", rank=4, **kwargs)
