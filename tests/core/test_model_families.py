"""The held-in architecture check: tiny random GPT-2, OPT, Qwen2, Mistral, T5, DistilBERT, BERT and Llama × lora
and unilora — the adapter changes the forward, merges exactly, saves/loads, and exports to PEFT with equal outputs."""

from __future__ import annotations

import pytest
import torch
from helpers import PROJECTION_CASES, perturb, tiny_bert, tiny_gpt2, tiny_llama, tiny_model

from lorazoo import AdapterConfig, attach, load_adapter


def family(model_type: str, auto_class: str = "AutoModelForCausalLM"):
    """A builder of the tiny ``model_type`` (its small config in helpers.FAMILY_CONFIGS), seeded like tiny_bert."""
    return lambda seed=0: tiny_model(model_type, auto_class, seed)


tiny_opt, tiny_qwen2, tiny_mistral = family("opt"), family("qwen2"), family("mistral")
tiny_t5 = family("t5", "AutoModelForSeq2SeqLM")
tiny_distilbert = family("distilbert", "AutoModelForSequenceClassification")


# family: (builder, target_modules, how many modules the targets must adapt)
FAMILIES = {
    "gpt2": (tiny_gpt2, "all-linear", 8),  # Conv1D c_attn, c_proj, c_fc, mlp.c_proj
    "gpt2-c_attn": (tiny_gpt2, ["c_attn"], 2),
    "opt": (tiny_opt, "all-linear", 12),
    "qwen2": (tiny_qwen2, "all-linear", 14),
    "mistral": (tiny_mistral, "all-linear", 14),
    "t5": (tiny_t5, "all-linear", 2 * 6 + 2 * 10),  # encoder q,k,v,o,wi,wo; decoder + cross-attention
    "distilbert": (tiny_distilbert, ["q_lin", "v_lin"], 4),
    "bert": (tiny_bert, ["query", "value"], 4),
    "llama": (tiny_llama, "all-linear", 14),
}
IDS = torch.randint(1, 128, (2, 9), generator=torch.Generator().manual_seed(8))


def outputs(model, family: str) -> torch.Tensor:
    """Logits and the last hidden state, side by side (a random classifier head shrinks changes to ~1e-6)."""
    kwargs = {"decoder_input_ids": IDS[:, :5]} if family == "t5" else {}
    with torch.no_grad():
        out = model(input_ids=IDS, output_hidden_states=True, **kwargs)
    hidden = out.decoder_hidden_states[-1] if family == "t5" else out.hidden_states[-1]
    return torch.cat([out.logits.reshape(-1), hidden.reshape(-1)])


@pytest.mark.parametrize("projection", ["lora", "unilora"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family(family, projection, tmp_path):
    from peft import PeftModel

    build, targets, modules = FAMILIES[family]
    model = attach(
        build(0),
        AdapterConfig(
            projection=projection, rank=4, target_modules=targets, projection_kwargs=PROJECTION_CASES[projection]
        ),
    )
    assert len(model.layout) == modules
    perturb(model, scale=0.5 if projection == "unilora" else 0.05)  # unilora: d = 64 entries spread over all of θ_D
    expected, base = outputs(model, family), outputs(build(0), family)
    assert float((expected - base).abs().max()) > 1e-3, "the adapter does not change the forward"

    model.save_adapter(tmp_path / "adapter")
    torch.testing.assert_close(outputs(load_adapter(build(0), tmp_path / "adapter"), family), expected, atol=0, rtol=0)

    model.export_peft_lora(tmp_path / "peft")
    peft_model = PeftModel.from_pretrained(build(0), tmp_path / "peft").eval()
    torch.testing.assert_close(outputs(peft_model, family), expected, atol=1e-5, rtol=0)

    with torch.no_grad():
        model.merge()
    torch.testing.assert_close(outputs(model, family), expected, atol=1e-4, rtol=0)
