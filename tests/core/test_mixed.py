"""Mixed-adapter batches: ``model(..., adapter_names=[one per row])`` across projections (mixed.py)."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import PROJECTION_CASES, perturb, tiny_bert, tiny_llama

from lorazoo import (
    AdapterConfig,
    AdapterStateError,
    ConfigError,
    LoraZooError,
    attach,
    projection_names,
)

PAIRS = list(itertools.combinations_with_replacement(projection_names(), 2))
BASE = "__base__"


def two_adapters(first: str, second: str, seed: int = 0):
    """Adapter "a" (all-linear) and "b" (q_proj, v_proj only: a different layout) on one tiny Llama."""
    model = attach(
        tiny_llama(0),
        AdapterConfig(
            projection=first, rank=4, target_modules="all-linear", seed=seed, projection_kwargs=PROJECTION_CASES[first]
        ),
        adapter_name="a",
    )
    model.add_adapter(
        "b",
        AdapterConfig(
            projection=second,
            rank=4,
            target_modules=["q_proj", "v_proj"],
            seed=seed + 1,
            projection_kwargs=PROJECTION_CASES[second],
        ),
    )
    for name in ("a", "b"):
        model.set_adapter(name)
        perturb(model, seed=11 if name == "a" else 12)
    return model


def single_outputs(model, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("a", "b"):
        model.set_adapter(name)
        out[name] = model(input_ids=input_ids).logits
    with model.disabled():
        out[BASE] = model(input_ids=input_ids).logits
    return out


@pytest.mark.parametrize("first, second", PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_every_row_equals_its_single_adapter_output(first, second):
    model = two_adapters(first, second)
    ids = torch.randint(0, 128, (5, 7), generator=torch.Generator().manual_seed(4))
    names = ["a", "b", BASE, "b", "a"]
    with torch.no_grad():
        single = single_outputs(model, ids)
        assert not torch.allclose(single["a"], single[BASE], atol=1e-4)
        assert not torch.allclose(single["b"], single[BASE], atol=1e-4)
        mixed = model(input_ids=ids, adapter_names=names).logits
    for row, name in enumerate(names):
        torch.testing.assert_close(mixed[row], single[name][row], atol=1e-6, rtol=0)
    # with gradients enabled too (the pre-hook path that does not cache θ_D)
    mixed_grad = model(input_ids=ids, adapter_names=names).logits
    torch.testing.assert_close(mixed_grad, mixed, atol=1e-6, rtol=0)


def test_theta_D_once_per_adapter_per_forward():
    model = two_adapters("unilora", "vera")
    calls = {"a": 0, "b": 0}
    for name in calls:
        projection = model.adapters[name]
        original = projection.pieces

        def counted(original=original, name=name):
            calls[name] += 1
            return original()

        projection.pieces = counted
    ids = torch.randint(0, 128, (4, 6), generator=torch.Generator().manual_seed(5))
    model(input_ids=ids, adapter_names=["a", "b", "a", "b"])
    assert calls == {"a": 1, "b": 1}
    model(input_ids=ids, adapter_names=["a", "a", BASE, BASE])
    assert calls == {"a": 2, "b": 1}  # an adapter no row names is not computed


def test_generate_keeps_each_row_on_its_adapter():
    model = two_adapters("lora", "unilora")
    prompt = torch.randint(1, 128, (3, 4), generator=torch.Generator().manual_seed(6))
    names = ["b", BASE, "a"]
    kwargs = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        mixed = model.generate(prompt, adapter_names=names, **kwargs)
        beams = model.generate(prompt, adapter_names=names, num_beams=2, **kwargs)
        for row, name in enumerate(names):
            if name == BASE:
                with model.disabled():
                    single = model.generate(prompt[row : row + 1], **kwargs)
                    single_beam = model.generate(prompt[row : row + 1], num_beams=2, **kwargs)
            else:
                model.set_adapter(name)
                single = model.generate(prompt[row : row + 1], **kwargs)
                single_beam = model.generate(prompt[row : row + 1], num_beams=2, **kwargs)
            assert torch.equal(mixed[row], single[0]), name
            assert torch.equal(beams[row], single_beam[0]), name


def test_trained_heads_follow_their_rows():
    """BERT classifier heads (modules_to_save) are per adapter: each row's logits come from its own head."""
    model = attach(
        tiny_bert(0),
        AdapterConfig(projection="lora", rank=4, target_modules=["query", "value"], modules_to_save=["classifier"]),
        adapter_name="a",
    )
    model.add_adapter(
        "b",
        AdapterConfig(
            projection="vblora",
            rank=4,
            target_modules=["query"],
            seed=3,
            projection_kwargs=PROJECTION_CASES["vblora"],
            modules_to_save=["classifier"],
        ),
    )
    for name in ("a", "b"):
        model.set_adapter(name)
        perturb(model, seed=21 if name == "a" else 22)
    ids = torch.randint(0, 128, (3, 9), generator=torch.Generator().manual_seed(7))
    names = ["b", "a", BASE]
    with torch.no_grad():
        mixed = model(input_ids=ids, adapter_names=names).logits
        for row, name in enumerate(names):
            if name == BASE:
                with model.disabled():
                    expected = model(input_ids=ids).logits[row]
            else:
                model.set_adapter(name)
                expected = model(input_ids=ids).logits[row]
            torch.testing.assert_close(mixed[row], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "names, fragment",
    [
        (["a", "nope"], "unknown adapter name(s) ['nope']"),
        (["a"], "adapter_names has 1 entries but"),
        ("a", "one adapter name per row"),
        ([], "non-empty list"),
        (["a", 3], "must be adapter names"),
    ],
)
def test_bad_adapter_names_are_one_line_errors(names, fragment):
    model = two_adapters("lora", "vera")
    ids = torch.randint(0, 128, (2, 5))
    with pytest.raises(LoraZooError) as info:
        model(input_ids=ids, adapter_names=names)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_merged_model_refuses_mixed_batches():
    model = two_adapters("lora", "unilora")
    model.set_adapter("a")
    model.merge()
    with pytest.raises(AdapterStateError, match="is merged into the base weights"):
        model(input_ids=torch.randint(0, 128, (2, 5)), adapter_names=["a", "b"])
    with pytest.raises(AdapterStateError, match="is merged"):
        model.generate(torch.randint(0, 128, (2, 5)), adapter_names=["a", "b"], max_new_tokens=2)


def test_unknown_keyword_is_refused_not_ignored():
    """transformers' forward would drop ``adapter_name`` (singular) silently: lorazoo names it."""
    model = two_adapters("lora", "vera")
    ids = torch.randint(0, 128, (2, 5))
    with pytest.raises(ConfigError, match=r"unknown keyword argument\(s\) \['adapter_name'\]"):
        model(input_ids=ids, adapter_name="b")
    model(input_ids=ids, output_hidden_states=True, return_dict=True)  # real transformers keywords still pass


def test_plain_forward_after_a_mixed_one_uses_the_active_adapter():
    model = two_adapters("lora", "tied")
    model.set_adapter("b")
    ids = torch.randint(0, 128, (2, 5))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        model(input_ids=ids, adapter_names=["a", BASE])
        torch.testing.assert_close(model(input_ids=ids).logits, before, atol=0, rtol=0)
