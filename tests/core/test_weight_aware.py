"""Weight-aware projections (every ``reads_base_weights`` one: loraxs, tinylora) through the generic lifecycle.

The frozen SVD structures are computed once at attach from the weight in the layout's (out × in)
orientation (Conv1D and embeddings transposed, quantised weights dequantised), saved with the adapter,
used as saved on load, and checked against the base the adapter is loaded onto.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from helpers import (
    PROJECTION_CASES,
    TINY_MODELS,
    TINY_TARGETS,
    compose_config,
    model_inputs,
    perturb,
    run_config,
    tiny_llama,
)
from helpers.parallel import HELPERS, torchrun_two

from lorazoo import (
    AdapterConfig,
    AdapterStateError,
    ConfigError,
    LayoutMismatchError,
    LoraZooError,
    attach,
    count_parameters,
    load_adapter,
    projection_names,
)
from lorazoo.projections import build_projection, get_projection_class
from lorazoo.quantized import dequantized_weight
from lorazoo.targets import layout_from_model

# the two SVD-based methods by name (so these tests fail, not vanish, where they are missing) + any later one
WEIGHT_AWARE = sorted(
    {"loraxs", "tinylora"} | {n for n in projection_names() if get_projection_class(n).reads_base_weights}
)
IDS = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(3))


def config(projection: str, rank: int = 4, targets=("q_proj", "v_proj"), **kwargs) -> AdapterConfig:
    options = {**PROJECTION_CASES[projection], **kwargs}
    target_modules = targets if isinstance(targets, str) else list(targets)
    return AdapterConfig(projection=projection, rank=rank, target_modules=target_modules, projection_kwargs=options)


def trained(projection: str, base=None, **kwargs):
    model = attach(base if base is not None else tiny_llama(0), config(projection, **kwargs))
    perturb(model)
    return model


def test_the_weight_aware_methods_are_registered():
    assert all(get_projection_class(name).reads_base_weights for name in WEIGHT_AWARE)


def _other_seed(base):
    return tiny_llama(1)


def _bf16(base):
    return base.to(torch.bfloat16)


def _one_element(base):
    with torch.no_grad():
        base.model.layers[1].self_attn.v_proj.weight[3, 5] += 1e-3
    return base


def _fine_tuned(base):
    with torch.no_grad():
        base.model.layers[0].self_attn.q_proj.weight.mul_(1.0001)
    return base


@pytest.mark.parametrize("change", [_other_seed, _bf16, _one_element, _fine_tuned])
@pytest.mark.parametrize("projection", WEIGHT_AWARE)
def test_loading_onto_another_base_is_a_one_line_error(projection, change, tmp_path):
    trained(projection).save_adapter(tmp_path)
    with pytest.raises(LayoutMismatchError) as info:
        load_adapter(change(tiny_llama(0)), tmp_path)
    message = str(info.value)
    assert "\n" not in message and "not the weight" in message and "sha256" in message
    assert "load the adapter onto the base it was trained on" in message


@pytest.mark.parametrize("projection", WEIGHT_AWARE)
def test_load_uses_the_saved_structures_never_a_new_svd(projection, tmp_path, monkeypatch):
    model = trained(projection)
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
    model.save_adapter(tmp_path)

    def no_svd(*args, **kwargs):
        raise AssertionError("load recomputed an SVD")

    monkeypatch.setattr(torch.linalg, "svd", no_svd)
    loaded = load_adapter(tiny_llama(0), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, expected, atol=0, rtol=0)
    for key in ("svd_U", "svd_S", "svd_Vh", "base_sha256"):
        assert torch.equal(getattr(loaded.projection, key), getattr(model.projection, key))


@pytest.mark.parametrize("projection", WEIGHT_AWARE)
def test_stored_counts_the_saved_svd_and_trainable_does_not(projection, tmp_path):
    model = trained(projection)
    counts = model.num_parameters()
    svd = sum(e.rank * (e.in_features + e.out_features + 1) for e in model.layout)  # U_r, V_rᵀ and Σ_r
    assert counts["stored"] == counts["trainable"] + svd
    model.save_adapter(tmp_path)
    from safetensors.torch import load_file

    floats = sum(t.numel() for t in load_file(str(tmp_path / "adapter.safetensors")).values() if t.is_floating_point())
    assert floats == counts["stored"]


@pytest.mark.parametrize("projection", WEIGHT_AWARE)
def test_a_projection_built_without_a_base_refuses_to_compute(projection):
    layout = layout_from_model(tiny_llama(0), ["q_proj", "v_proj"], 4)
    built = build_projection(layout, config(projection))
    with pytest.raises(AdapterStateError, match="SVD of the base weights is not computed") as info:
        built()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("projection", WEIGHT_AWARE)
def test_rank_above_a_weights_width_is_refused_in_one_line(projection):
    # the tiny Llama's k_proj is 16 × 32: a truncated SVD has 16 triplets
    with pytest.raises(ConfigError, match=r"rank=17 is invalid for module .*k_proj.*valid: rank <= 16") as info:
        attach(tiny_llama(0), config(projection, rank=17, targets="all-linear"))
    assert "\n" not in str(info.value)
    fields = {"model_type": "llama", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64}
    fields |= {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    with pytest.raises(ConfigError, match="rank=17 is invalid"):
        count_parameters(fields, config(projection, rank=17, targets="all-linear"), task_type="causal_lm")


@pytest.mark.parametrize("kind", ["gpt2", "llama_embed", "bert"])
@pytest.mark.parametrize("projection", WEIGHT_AWARE)
def test_the_svd_input_is_the_weight_in_out_by_in_orientation(projection, kind):
    """At full rank U Σ Vᵀ gives W back: Conv1D (stored in × out) and embeddings (vocab × dim) transposed."""
    base = TINY_MODELS[kind](0)
    rank = 32  # every adapted module of these models has min(out, in) = 32
    model = attach(base, config(projection, rank=rank, targets=TINY_TARGETS[kind]))
    reference = TINY_MODELS[kind](0)
    from transformers.pytorch_utils import Conv1D

    for (u, s, vh), entry in zip(model.projection.svd_factors(), model.layout):
        module = reference.get_submodule(entry.name)
        stored = module.weight.detach()
        expected = stored.T if isinstance(module, (Conv1D, torch.nn.Embedding)) else stored  # both store in × out
        assert expected.shape == (entry.out_features, entry.in_features)
        torch.testing.assert_close(u @ torch.diag(s) @ vh, expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        out = model(**model_inputs(kind)).logits
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("projection", WEIGHT_AWARE)
def test_adding_one_over_a_merged_adapter_is_refused(projection):
    model = attach(tiny_llama(0), AdapterConfig(projection="lora", rank=4, target_modules=["q_proj"]), adapter_name="a")
    perturb(model)
    model.merge()
    with pytest.raises(AdapterStateError, match="holds a merged adapter; unmerge") as info:
        model.add_adapter("b", config(projection))
    assert "\n" not in str(info.value)
    model.unmerge()
    model.add_adapter("b", config(projection))  # the base is W again: fine


@pytest.mark.parametrize("projection", WEIGHT_AWARE)
def test_loading_weights_into_a_merged_adapter_works_and_another_bases_file_is_refused(projection, tmp_path):
    """The resume path while merged (unmerge → load → re-merge) reads no weight: the file's record of its base
    is compared with the live adapter's, which was taken before the merge."""
    model = trained(projection)
    other = trained(projection)
    perturb(other, seed=11)
    other.save_adapter(tmp_path / "same")
    trained(projection, base=tiny_llama(1)).save_adapter(tmp_path / "foreign")
    model.merge()
    model.load_adapter_weights(tmp_path / "same")
    assert model.merged_adapter == "default"
    with torch.no_grad():
        expected = load_adapter(tiny_llama(0), tmp_path / "same")(input_ids=IDS).logits
        torch.testing.assert_close(model(input_ids=IDS).logits, expected, atol=1e-5, rtol=0)
    before = {k: v.clone() for k, v in model.adapter_tensors().items()}
    with pytest.raises(LayoutMismatchError, match="saved from another base than the active adapter's") as info:
        model.load_adapter_weights(tmp_path / "foreign")
    assert "\n" not in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.adapter_tensors().items())  # nothing changed


# ----------------------------------------------------------------------------- quantised bases
def _quantised(path: Path, mode: str):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = (
        BitsAndBytesConfig(load_in_8bit=True)
        if mode == "8bit"
        else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, dtype=torch.float32).eval()
    except (ImportError, RuntimeError, ValueError) as exc:
        pytest.skip(f"bitsandbytes cannot quantise here: {exc}")


@pytest.mark.parametrize("mode", ["8bit", "4bit"])
@pytest.mark.parametrize("projection", WEIGHT_AWARE)
def test_a_quantised_base_gives_the_svd_of_its_dequantised_weight(projection, mode, tmp_path):
    # widths a multiple of the 4-bit blocksize (64), as tests/core/test_quantized.py explains
    tiny_llama(0, hidden=64, intermediate=128).save_pretrained(tmp_path / "base")
    base = _quantised(tmp_path / "base", mode)
    dense = {name: dequantized_weight(base.get_submodule(name)) for name in ("model.layers.0.self_attn.q_proj",)}
    model = attach(base, config(projection, rank=32))  # v_proj is 32 × 64: full rank is 32
    for (u, s, vh), entry in zip(model.projection.svd_factors(), model.layout):
        if entry.name in dense:  # the rank-32 truncation of the dequantised weight (a product: sign-free)
            best = torch.linalg.svd(dense[entry.name], full_matrices=False)
            expected = best.U[:, :32] @ torch.diag(best.S[:32]) @ best.Vh[:32]
            torch.testing.assert_close(u @ torch.diag(s) @ vh, expected, atol=1e-5, rtol=0)
    perturb(model)
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
    model.save_adapter(tmp_path / "adapter")
    loaded = load_adapter(_quantised(tmp_path / "base", mode), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, expected, atol=0, rtol=0)
    with pytest.raises(LoraZooError, match="not the weight"):  # the float base is another SVD input
        load_adapter(tiny_llama(0, hidden=64, intermediate=128), tmp_path / "adapter")


# ----------------------------------------------------------------------------- the command line
@pytest.mark.parametrize("projection", WEIGHT_AWARE)
def test_run_py_trains_each_on_the_tiny_llama(projection, tmp_path):
    """``python run.py projection=<m> model=tiny_llama`` (the paper setting from the projection file; LoRA-XS's
    r = 64 fitted to the 16-wide k_proj), with the tiny task overrides tests/train/test_runner.py uses."""
    import json

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(8)]
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [f"projection={projection}", "model=tiny_llama", "task=math/gsm8k", f"task.data_dir={data}"]
    overrides += ["logger=none", "trainer.batch_size=4", "trainer.max_steps=2", "trainer.progress_bar=false"]
    overrides += ["task.max_eval_samples=2", "task.max_new_tokens=2", "task.max_length=48"]
    record = run_config(compose_config(*overrides), tmp_path / "run")
    assert record["status"] == "completed" and record["steps"] == 2 and record["trainable"] > 0
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "run" / "adapter" / "adapter.safetensors"))
    assert {"projection.svd_U", "projection.svd_S", "projection.svd_Vh", "projection.base_sha256"} <= set(saved)


# ----------------------------------------------------------------------------- several processes
@pytest.mark.slow
def test_every_rank_takes_rank_zeros_svd(tmp_path):
    """Two gloo processes; rank 1's SVD returns the opposite sign of every pair (as another BLAS may): after
    attach both ranks hold rank 0's U_r, Σ_r, V_rᵀ (tests/helpers/svd_broadcast_worker.py)."""
    import json

    done = torchrun_two(HELPERS / "svd_broadcast_worker.py", str(tmp_path), ",".join(WEIGHT_AWARE), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    zero, one = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert zero == one and sorted(zero) == WEIGHT_AWARE
    for projection in WEIGHT_AWARE:  # rank 0 kept its own (unflipped) SVD
        attached = attach(tiny_llama(0), config(projection, rank=2)).projection
        assert zero[projection]["svd_U"] == attached.svd_U.tolist()
