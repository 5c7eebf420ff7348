"""Tiny randomly initialised models for fast tests, built from the package's one table of tiny configs.

BERT and Llama use ``TINY_CONFIGS`` (what ``model.pretrained=tiny:<kind>`` loads), so the tests exercise the
same shapes as tiny training runs; the other families exist only to test architectures, so their small
configs live here.
"""

from __future__ import annotations

from typing import Any

import torch

from lorazoo import projection_names
from lorazoo.projections import get_projection_class
from lorazoo.train.loading.tiny import TINY_CONFIGS

VOCAB = 128

# projection_kwargs that fit the tiny models (hidden 32/64, 2 layers): each projection declares its own
# (``tiny_case`` in its file), so a new projection file joins the invariant matrix by itself.
PROJECTION_CASES: dict[str, dict] = {name: dict(get_projection_class(name).tiny_case) for name in projection_names()}

# architectures the package has no ``tiny:`` model for (Qwen2 and Mistral share Llama's field names)
FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0),
    "opt": dict(
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=2,
        max_position_embeddings=64,
        word_embed_proj_dim=32,
    ),
    "qwen2": TINY_CONFIGS["llama"],
    "mistral": TINY_CONFIGS["llama"],
    "t5": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0),
    "distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64),
}


def tiny_model(model_type: str, auto_class: str, seed: int = 0, **fields: Any) -> torch.nn.Module:
    """A model of ``model_type`` with random weights drawn after ``torch.manual_seed(seed)``, in eval mode.

    ``auto_class`` names the transformers Auto class (the head); ``fields`` override the table's config values.
    """
    import transformers

    table = {**FAMILY_CONFIGS, **TINY_CONFIGS}
    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model(model_type, **{"vocab_size": VOCAB, **table[model_type], **fields})
    return getattr(transformers, auto_class).from_config(config).eval()


def tiny_bert(seed: int = 0, num_labels: int = 2) -> torch.nn.Module:
    return tiny_model("bert", "AutoModelForSequenceClassification", seed, num_labels=num_labels)


def tiny_llama(seed: int = 0, hidden: int = 32, intermediate: int = 64, **fields: Any) -> torch.nn.Module:
    return tiny_model(
        "llama", "AutoModelForCausalLM", seed, hidden_size=hidden, intermediate_size=intermediate, **fields
    )


def tiny_gpt2(seed: int = 0) -> torch.nn.Module:
    """GPT-2: every projection is a transformers Conv1D (weight stored in × out); wte is tied to lm_head."""
    return tiny_model("gpt2", "AutoModelForCausalLM", seed)


# "llama_embed": an embedding target beside a Linear one (the embedding merges: Llama's are untied here)
TINY_MODELS = {"bert": tiny_bert, "llama": tiny_llama, "gpt2": tiny_gpt2, "llama_embed": tiny_llama}
TINY_TARGETS = {
    "bert": ["query", "value"],
    "llama": "all-linear",
    "gpt2": "all-linear",
    "llama_embed": ["embed_tokens", "q_proj"],
}


def model_inputs(kind: str, seed: int = 3) -> dict:
    """A fixed small batch for a model of ``kind`` (BERT gets an attention mask; causal models ids only)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "bert":
        return {
            "input_ids": torch.randint(0, VOCAB, (3, 9), generator=g),
            "attention_mask": torch.ones(3, 9, dtype=torch.long),
        }
    return {"input_ids": torch.randint(0, VOCAB, (2, 11), generator=g)}


def perturb(model: torch.nn.Module, scale: float = 0.05, seed: int = 7) -> None:
    """Move every trainable adapter parameter off its init so ΔW ≠ 0 (tests then see real factors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype))
