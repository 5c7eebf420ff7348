"""4-/8-bit bitsandbytes bases (QLoRA): adapter forward, merge (never a silent no-op), Trainer/run.py training.

bitsandbytes >= 0.45 runs its 4-/8-bit layers on CPU; where it is missing or cannot quantise here, every
test skips with the reason.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from helpers import PROJECTION_CASES, compose_config, perturb, run_config, tiny_llama

from lorazoo import AdapterConfig, attach, load_adapter
from lorazoo.quantized import dequantized_weight, quantization_of, requantization_bound

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")

# every quantised layer's in_features a multiple of the 4-bit blocksize (64): on CPUs with AVX512-BF16,
# bitsandbytes 0.50's CPU 4-bit kernels quantise narrower rows far outside nf4's error bound (measured:
# error up to 0.9 x the row's absmax at in_features = 32) and crash in their no-grad repacking
QUANT_DIMS = {"hidden": 64, "intermediate": 128}


def _quantization_config(mode: str):
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )


@pytest.fixture(scope="module")
def saved_base(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(0, **QUANT_DIMS).save_pretrained(path)
    return path


def quantized_base(path: Path, mode: str):
    from transformers import AutoModelForCausalLM

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoModelForCausalLM.from_pretrained(
                path, quantization_config=_quantization_config(mode), dtype=torch.float32
            ).eval()
    except (ImportError, RuntimeError, ValueError) as exc:  # no usable bitsandbytes backend on this machine
        pytest.skip(f"bitsandbytes cannot quantise here: {exc}")


def adapted(base, projection: str = "lora"):
    model = attach(
        base,
        AdapterConfig(
            projection=projection, rank=4, target_modules="all-linear", projection_kwargs=PROJECTION_CASES[projection]
        ),
    )
    perturb(model, scale=0.2 if projection == "lora" else 2.0)  # unilora's d = 64 entries each reach many factors
    return model


IDS = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("mode", ["8bit", "4bit"])
@pytest.mark.parametrize("projection", ["lora", "unilora", "randlora", "nola"])
def test_forward_matches_the_float_base_adapter_within_quantisation_error(saved_base, mode, projection):
    model = adapted(quantized_base(saved_base, mode), projection)
    layer = model.adapted_layers()[0]
    assert quantization_of(layer.base_layer) == mode
    # the adapter path itself is exact on a quantised layer: output − base output = s · B A x
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(input_ids=IDS)  # the pre-hook computes θ_D
        a, b_scaled = model.lora_factors()[layer.module_name]
        torch.testing.assert_close(layer(x) - layer.base_layer(x), x @ a.T @ b_scaled.T, atol=1e-5, rtol=1e-4)
        logits_q = model(input_ids=IDS).logits
        with model.disabled():
            base_q = model(input_ids=IDS).logits
    float_model = adapted(tiny_llama(0, **QUANT_DIMS), projection)
    with torch.no_grad():
        logits_fp = float_model(input_ids=IDS).logits
        base_fp = tiny_llama(0, **QUANT_DIMS)(input_ids=IDS).logits
    quantisation_error = float((base_q - base_fp).abs().max())
    assert float((logits_fp - base_fp).abs().max()) > 10 * quantisation_error  # the adapter visibly acts
    assert float((logits_q - logits_fp).abs().max()) <= 3 * quantisation_error + 1e-4


@pytest.mark.parametrize("mode", ["8bit", "4bit"])
def test_merge_requantises_within_the_stated_bound_and_is_never_a_no_op(saved_base, mode):
    model = adapted(quantized_base(saved_base, mode))
    layers = model.adapted_layers()
    before = {layer.module_name: dequantized_weight(layer.base_layer) for layer in layers}
    with torch.no_grad():
        model(input_ids=IDS)
        deltas = {name: b @ a for name, (a, b) in model.lora_factors().items()}
        unmerged = model(input_ids=IDS).logits
        model.merge()
        merged = model(input_ids=IDS).logits
    assert set(model.merge_errors) == set(before)
    for layer in layers:
        name = layer.module_name
        exact = before[name] + deltas[name]
        after = dequantized_weight(layer.base_layer)
        assert quantization_of(layer.base_layer) == mode  # still a quantised layer
        assert not torch.equal(after, before[name]), f"merge left {name} unchanged"
        error = (after - exact).abs()
        assert bool((error <= requantization_bound(layer.base_layer, exact) + 1e-6).all()), name
        assert model.merge_errors[name] == pytest.approx(float(error.max()), abs=1e-6)
    # a merged forward no longer adds the adapter but reproduces it through the weights
    assert float((merged - unmerged).abs().max()) < 0.5 * float(
        (unmerged - tiny_llama(0, **QUANT_DIMS)(input_ids=IDS).logits).abs().max()
    )
    with torch.no_grad():
        model.unmerge()
        for layer in layers:
            bound = 2 * requantization_bound(layer.base_layer, before[layer.module_name] + deltas[layer.module_name])
            err = (dequantized_weight(layer.base_layer) - before[layer.module_name]).abs()
            assert bool((err <= bound + requantization_bound(layer.base_layer, before[layer.module_name]) + 1e-6).all())


@pytest.mark.parametrize("mode", ["8bit", "4bit"])
def test_a_merge_the_format_cannot_hold_is_refused_and_changes_nothing(saved_base, mode, monkeypatch):
    """A requantised W + ΔW outside the format's bound is a one-line error before any layer changes (here the
    bound is made 0 so that every format misses it; bitsandbytes' CPU 4-bit rows narrower than a blocksize
    miss the real one on some machines)."""
    from lorazoo import AdapterStateError, quantized

    model = adapted(quantized_base(saved_base, mode))
    layers = model.adapted_layers()
    before = {layer.module_name: dequantized_weight(layer.base_layer) for layer in layers}
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
    monkeypatch.setattr(quantized, "requantization_bound", lambda module, value: torch.zeros_like(value.float()))
    with pytest.raises(AdapterStateError, match=r"cannot merge into '.*': requantising W \+ ΔW as " + mode):
        model.merge()
    assert model.merged_adapter is None and not any(layer.merged for layer in layers)
    for layer in layers:
        assert torch.equal(dequantized_weight(layer.base_layer), before[layer.module_name]), layer.module_name
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, expected)


def test_a_4bit_merge_is_within_the_bound_or_refused_on_narrow_rows(tmp_path):
    """32-wide rows (less than the 64-value blocksize): on this machine's bitsandbytes either the merge keeps
    its bound or it is refused; never a merged weight silently outside it."""
    from lorazoo import AdapterStateError

    tiny_llama(0).save_pretrained(tmp_path)
    model = adapted(quantized_base(tmp_path, "4bit"))
    with torch.no_grad():
        model(input_ids=IDS)
        exact = {
            layer.module_name: dequantized_weight(layer.base_layer) + b @ a
            for layer in model.adapted_layers()
            for a, b in [model.lora_factors()[layer.module_name]]
        }
    try:
        model.merge()
    except AdapterStateError as error:
        assert "cannot merge into" in str(error)
        assert model.merged_adapter is None
        return
    for layer in model.adapted_layers():
        value = exact[layer.module_name]
        error = (dequantized_weight(layer.base_layer) - value).abs()
        assert bool((error <= requantization_bound(layer.base_layer, value) + 1e-6).all()), layer.module_name


def test_adapter_trained_on_a_quantised_base_saves_and_loads(saved_base, tmp_path):
    model = adapted(quantized_base(saved_base, "4bit"), "unilora")
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
    model.save_adapter(tmp_path)
    loaded = load_adapter(quantized_base(saved_base, "4bit"), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, expected, atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["8bit", "4bit"])
def test_runner_trains_on_a_quantised_tiny_llama(tmp_path, mode):
    records = [{"instruction": f"Repeat the word number {i}.", "input": "", "output": f"word{i}"} for i in range(12)]
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(records))
    overrides = [
        "logger=none",
        "trainer.batch_size=4",
        "trainer.eval_batch_size=4",
        "trainer.logging_steps=1",
        "trainer.progress_bar=false",
        "model=tiny_llama",
        "+model.dims.hidden_size=64",  # see QUANT_DIMS
        "+model.dims.intermediate_size=128",
        f"model.quantization={mode}",
        "model.bnb_4bit_compute_dtype=float32",
        "projection=lora",
        "task=instruct/alpaca",
        f"task.data_file={data}",
        "task.eval_size=4",
        "task.num_generations=1",
        "task.max_new_tokens=2",
        "task.max_length=48",
        "trainer.max_steps=2",
    ]
    cfg = compose_config(*overrides)
    record = run_config(cfg, tmp_path / "run")
    assert record["status"] == "completed" and record["steps"] == 2
    assert (tmp_path / "run" / "adapter" / "adapter.safetensors").is_file()
    # the runner's base really is quantised (the same loader the run used)
    from lorazoo.train.loading.base_model import load_base
    from lorazoo.train.options import ModelOptions, from_node

    base, _, _ = load_base(from_node(ModelOptions, cfg.model, "model config"), num_labels=1)
    assert {quantization_of(m) for m in base.model.layers.modules() if isinstance(m, torch.nn.Linear)} == {mode}


def test_bad_quantization_option_is_a_one_line_error():
    from lorazoo.train.errors import ConfigError
    from lorazoo.train.options import ModelOptions

    with pytest.raises(
        ConfigError, match=r"model.quantization='3bit' is not valid; choose one of \['none', '8bit', '4bit'\]"
    ):
        ModelOptions(name="x", pretrained="tiny:llama", quantization="3bit")


def test_attached_4bit_layers_keep_the_portable_layout(saved_base):
    """bitsandbytes' AVX512-BF16 repack (bf16 absmax, crashes on narrow rows) is off for every attached layer,
    so evaluation never changes the stored weights: dequantised before and after a no-grad forward are equal."""
    model = adapted(quantized_base(saved_base, "4bit"))
    quantised = [m for m in model.modules() if quantization_of(m) == "4bit"]
    assert quantised and all(not getattr(m, "support_avx512bf16_for_cpu", False) for m in quantised)
    before = [dequantized_weight(m) for m in quantised]
    with torch.no_grad():
        model.eval()(input_ids=IDS)
    assert all(torch.equal(b, dequantized_weight(m)) for b, m in zip(before, quantised, strict=True))
