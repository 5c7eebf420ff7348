"""Tied-LoRA: ΔW against the paper's formula in plain torch, zero-ΔW init for every `train` choice,
group counts, shape errors, what is saved, and θ_D assembly for interleaved and irregular layouts."""

from __future__ import annotations

import hashlib

import pytest
import torch
from helpers import model_inputs, perturb, tiny_bert, tiny_llama
from safetensors.torch import load_file

from lorazoo import AdapterConfig, ConfigError, Layout, attach, load_adapter
from lorazoo.projections.sharing import LayerGroups
from lorazoo.projections.tied import TiedProjection

# q0, v0, q1: the kinds do not repeat block by block, so assembly takes the general path
IRREGULAR_BERT = ["query", "layer.0.attention.self.value"]
GOLDEN_SEED0_BERT = "6f1d6289223be3b2"  # sha256 prefix of every group's A ‖ B (float32 bytes), seed 0, r = 4


def make(base=tiny_bert, targets=("query", "value"), rank=4, alpha=None, **kwargs):
    return attach(
        base(0),
        AdapterConfig(
            projection="tied",
            rank=rank,
            alpha=alpha,
            target_modules=targets if isinstance(targets, str) else list(targets),
            projection_kwargs=kwargs,
        ),
    )


def paper_delta(model, name):
    """(α/r) · diag(v_l) B · diag(u_l) A from the group tensors, found by kind and position, not by the code's plan."""
    entry = model.layout.entry(name)
    kinds = [e.kind for e in model.layout]
    group = model.projection.groups[list(dict.fromkeys(kinds)).index(entry.kind)]
    position = [e.name for e in model.layout if e.kind == entry.kind].index(name)
    a = torch.diag(group.u[position]) @ group.A
    b = torch.diag(group.v[position]) @ group.B
    return model.projection.scaling * (b @ a)


@pytest.mark.parametrize(
    "base, targets", [(tiny_bert, ["query", "value"]), (tiny_llama, "all-linear"), (tiny_bert, IRREGULAR_BERT)]
)
def test_delta_weight_is_the_paper_formula(base, targets):
    model = make(base, targets, alpha=8)  # s = 8 / 4 = 2
    assert model.projection.scaling == 2.0
    perturb(model)
    with torch.no_grad():
        for entry in model.layout:
            torch.testing.assert_close(
                model.delta_weight(entry.name), paper_delta(model, entry.name), atol=1e-6, rtol=1e-5
            )


TRAIN_CHOICES = [
    ["shared", "u", "v"],
    ["A", "B", "u", "v"],
    ["u", "v"],
    ["scales"],
    ["shared"],
    ["B"],
    ["u"],
    ["A"],
    ["v"],
    ["A", "u"],
    ["B", "v"],
]


@pytest.mark.parametrize("train", TRAIN_CHOICES)
def test_zero_delta_at_init_and_a_step_moves_it(train):
    model = make(train=train)
    reference = tiny_bert(0)
    with torch.no_grad():
        torch.testing.assert_close(
            model(**model_inputs("bert")).logits, reference(**model_inputs("bert")).logits, atol=1e-6, rtol=0
        )
    for entry in model.layout:
        assert torch.count_nonzero(model.delta_weight(entry.name)) == 0
    trainable = {n.rsplit(".", 1)[-1] for n, _ in model.projection.named_trainable_parameters()}
    expected = {f for t in train for f in {"shared": "AB", "scales": "uv"}.get(t, t)}
    assert trainable == expected
    params = model.projection.trainable_parameters()
    optimizer = torch.optim.SGD(params, lr=0.1)
    model(**model_inputs("bert")).logits.pow(2).sum().backward()
    optimizer.step()
    assert any(torch.count_nonzero(model.delta_weight(e.name)) > 0 for e in model.layout), "zero gradient at init"


def roberta_base_qv(rank):
    return Layout.from_shapes([(f"l{i}.{k}", 768, 768) for i in range(12) for k in ("query", "value")], rank=rank)


@pytest.mark.parametrize(
    "train, per_group",
    [
        (["shared", "u", "v"], lambda r, h, o, k: r * (h + o) + k * (r + o)),
        (["u", "v"], lambda r, h, o, k: k * (r + o)),
        (["shared"], lambda r, h, o, k: r * (h + o)),
    ],
)
def test_counts_follow_the_group_formula(train, per_group):
    projection = TiedProjection(
        roberta_base_qv(8), AdapterConfig(projection="tied", rank=8, projection_kwargs={"train": train})
    )
    assert projection.d == 2 * per_group(8, 768, 768, 12)
    if train == ["shared", "u", "v"]:
        assert (
            projection.d == 43_200
        )  # the candidate for the "0.043M" Tied-LoRA row of VB-LoRA's Table 1 (arXiv:2405.15179)


def test_llama_all_linear_count_per_kind():
    model = make(tiny_llama, "all-linear")
    kinds: dict[str, list] = {}
    for e in model.layout:
        kinds.setdefault(e.kind, []).append(e)
    expected = sum(
        4 * (es[0].in_features + es[0].out_features) + len(es) * (4 + es[0].out_features) for es in kinds.values()
    )
    assert model.num_parameters()["trainable"] == expected and len(model.projection.groups) == 7


def test_one_kind_name_with_several_shapes_ties_per_shape():
    """GPT-2 names both attn.c_proj (32→32) and mlp.c_proj (128→32) ``c_proj``: two module types, tied per
    shape (as VeRA groups by kind and shape); a kind with one shape keeps its plain name (and init)."""
    layout = Layout.from_shapes(
        [
            ("h.0.attn.c_proj", 32, 32),
            ("h.0.mlp.c_proj", 128, 32),
            ("h.0.q", 32, 32),
            ("h.1.attn.c_proj", 32, 32),
            ("h.1.mlp.c_proj", 128, 32),
            ("h.1.q", 32, 32),
        ],
        rank=2,
    )
    projection = TiedProjection(layout, AdapterConfig(projection="tied", rank=2))
    assert [g.kind for g in projection.groups] == ["c_proj@32x32", "c_proj@128x32", "q"]
    assert [g.A.shape for g in projection.groups] == [(2, 32), (2, 128), (2, 32)]
    assert projection().shape == (layout.D,)


@pytest.mark.parametrize("train, fragment", [([], "train=[]"), (["w"], "train=['w']"), ("u", "train='u'")])
def test_bad_train_option(train, fragment):
    with pytest.raises(ConfigError) as info:
        make(train=train)
    assert fragment in str(info.value) and "'shared'" in str(info.value)


def test_frozen_parts_are_regenerated_not_saved(tmp_path):
    model = make(train=["u", "v"])
    perturb(model)
    with torch.no_grad():
        expected = model(**model_inputs("bert")).logits
    model.save_adapter(tmp_path)
    keys = set(load_file(str(tmp_path / "adapter.safetensors")))
    assert keys == {f"projection.groups.{g}.{f}" for g in range(2) for f in "uv"}
    loaded = load_adapter(tiny_bert(0), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**model_inputs("bert")).logits, expected, atol=0, rtol=0)


def test_parameter_groups_and_seeded_shared_matrices():
    model = make()
    groups = model.projection.parameter_groups()
    assert set(groups) == {"shared", "scales"}
    assert sum(p.numel() for ps in groups.values() for p in ps) == model.projection.d
    g = model.projection.groups[0]
    assert g.A.abs().max() <= 32**-0.5 and g.B.abs().max() <= 4**-0.5
    assert torch.all(g.u == 1) and torch.all(g.v == 0)
    data = b"".join(t.detach().numpy().tobytes() for grp in model.projection.groups for t in (grp.A, grp.B))
    assert hashlib.sha256(data).hexdigest()[:16] == GOLDEN_SEED0_BERT


@pytest.mark.parametrize("order", [["q", "v", "q", "v"], ["q", "q", "v"], ["q", "v", "o", "v", "q", "o"], ["q"]])
def test_layer_groups_place_each_layer_in_its_group(order):
    layout = Layout.from_shapes([(f"b{i}.{k}", 3, 2) for i, k in enumerate(order)], rank=1)
    groups = LayerGroups(layout, lambda e: e.kind)
    assert [groups.keys[g] for g, _ in groups.placement] == order
    assert all(groups.members[g][row] == i for i, (g, row) in enumerate(groups.placement))
