"""Shared fixtures: tiny randomly initialised models built from transformers configs."""

from __future__ import annotations

import os
from pathlib import Path

# one math thread per test process: `pytest -n 2` on 2 cores runs two workers, and torch's default of one
# thread per core made each worker's tiny forwards ~40x slower through oversubscription (set before torch
# loads; subprocess runs inherit it)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lorazoo import projection_names  # noqa: E402
from lorazoo.projections import get_projection_class  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LORAZOO_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")  # env: worktrees

# projection_kwargs that fit the tiny models below (hidden 32/64, 2 layers): each projection declares
# its own (``tiny_case`` in its file), so a new projection file joins the invariant matrix by itself.
PROJECTION_CASES: dict[str, dict] = {name: dict(get_projection_class(name).tiny_case) for name in projection_names()}


def tiny_bert(seed: int = 0, num_labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config).eval()


def tiny_llama(seed: int = 0, hidden: int = 32, intermediate: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0):
    """GPT-2: every projection is a transformers Conv1D (weight stored in × out); wte is tied to lm_head."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


# "llama_embed": an embedding target beside a Linear one (the embedding merges: Llama's are untied here)
TINY_MODELS = {"bert": tiny_bert, "llama": tiny_llama, "gpt2": tiny_gpt2, "llama_embed": tiny_llama}
TINY_TARGETS = {
    "bert": ["query", "value"],
    "llama": "all-linear",
    "gpt2": "all-linear",
    "llama_embed": ["embed_tokens", "q_proj"],
}


@pytest.fixture(autouse=True)
def _isolated_environment():
    """Undo every os.environ change a test makes, including ones made by library code it calls (submitit's
    TorchDistributedEnvironment exports RANK/WORLD_SIZE directly): a leaked WORLD_SIZE would turn a later
    in-process run on the same xdist worker into a rendezvous that never completes."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def bert_inputs():
    g = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(0, 128, (3, 9), generator=g),
        "attention_mask": torch.ones(3, 9, dtype=torch.long),
    }


@pytest.fixture
def llama_inputs():
    g = torch.Generator().manual_seed(2)
    return {"input_ids": torch.randint(0, 128, (2, 11), generator=g)}


def model_inputs(kind: str) -> dict:
    g = torch.Generator().manual_seed(3)
    if kind == "bert":
        return {
            "input_ids": torch.randint(0, 128, (3, 9), generator=g),
            "attention_mask": torch.ones(3, 9, dtype=torch.long),
        }
    return {"input_ids": torch.randint(0, 128, (2, 11), generator=g)}


def perturb(model, scale: float = 0.05, seed: int = 7) -> None:
    """Move every trainable adapter parameter off its init so ΔW ≠ 0 (tests then see real factors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype))


# The subset scripts/ci_floors.sh runs under the lowest versions pyproject.toml allows: the modules that
# exercise each direct dependency (Trainer/datasets, Hydra + Optuna, PEFT/TRL, bitsandbytes, lm-eval,
# math-verify, gguf), so a floor that is false fails CI.
FLOORS_MODULES = {
    "test_core",
    "test_runner",
    "test_tasks",
    "test_interop",
    "test_optimizer",
    "test_sweep",
    "test_quantized",
    "test_math",
    "test_gguf_cache",
    "test_lm_eval",
    "test_model_families",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in FLOORS_MODULES:
            item.add_marker(pytest.mark.floors)
