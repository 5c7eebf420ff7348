"""export_peft_lora(max_rank=...): a server's rank limit (vLLM's max_lora_rank <= 512) met by an exact SVD
re-factorisation of ΔW when its rank allows, else refused with the error a cut would cause, or cut on request
with the error recorded. Checked against PEFT loading the export and a plain-torch SVD of lorazoo's ΔW."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import PROJECTION_CASES, TINY_MODELS, TINY_TARGETS, model_inputs, perturb, tiny_bert, tiny_llama
from safetensors.torch import load_file

from lorazoo import AdapterConfig, ConfigError, attach, projection_names

VERA_RANK = 768  # VeRA's fitted rank on SmolLM2 (⌊4/3 · 576⌋): over vLLM's 512
TARGETS = ["q_proj", "v_proj", "down_proj"]


def vera(low_rank: int | None):
    """VeRA at r = 768 on the tiny Llama; ``low_rank``: only that many λ_d entries per module are non-zero,
    so each ΔW = Λ_b B Λ_d A has rank <= low_rank although its factors have rank 768."""
    model = attach(tiny_llama(), AdapterConfig(projection="vera", rank=VERA_RANK, target_modules=TARGETS))
    perturb(model, scale=0.5)
    if low_rank is not None:
        with torch.no_grad():
            model.projection.lambda_d.view(-1, VERA_RANK)[:, low_rank:] = 0
    return model


def served_logits(path):
    from peft import PeftModel

    with torch.no_grad():
        return PeftModel.from_pretrained(tiny_llama(), path).eval()(**model_inputs("llama")).logits


def spectrum_error(delta: torch.Tensor, k: int) -> float:
    """Relative Frobenius error of the best rank-k approximation (Eckart–Young), from plain torch."""
    sigma = torch.linalg.svdvals(delta.detach().double())
    return math.sqrt(float(sigma[k:].square().sum() / sigma.square().sum()))


def exported_deltas(path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(path / "adapter_model.safetensors"))
    prefix = "base_model.model."
    names = {k[len(prefix) : -len(".lora_A.weight")] for k in tensors if k.endswith(".lora_A.weight")}
    return {n: tensors[f"{prefix}{n}.lora_B.weight"] @ tensors[f"{prefix}{n}.lora_A.weight"] for n in names}


def test_low_rank_vera_delta_exports_exactly_under_the_limit(tmp_path):
    model = vera(low_rank=5)
    with torch.no_grad():
        expected = model(**model_inputs("llama")).logits
    model.export_peft_lora(tmp_path, max_rank=8)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 5 and not config.get("rank_pattern")
    torch.testing.assert_close(served_logits(tmp_path), expected, atol=1e-5, rtol=0)  # as today's exact export
    record = json.loads((tmp_path / "lorazoo_export.json").read_text())
    assert record["truncated"] is False and record["max_relative_error"] == 0.0 and record["rank"] == 5
    assert "Exact" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama_embed"])
def test_exact_refactorisation_on_every_layer_type(kind: str, tmp_path):
    """Linear (BERT), Conv1D (GPT-2, fan_in_fan_out) and an embedding beside a Linear: same outputs via PEFT."""
    from peft import PeftModel

    config = AdapterConfig(projection="vera", rank=64, target_modules=TINY_TARGETS[kind])
    model = attach(TINY_MODELS[kind](0), config)
    perturb(model, scale=0.5)
    with torch.no_grad():
        model.projection.lambda_d.view(-1, 64)[:, 3:] = 0
        expected = model(**model_inputs(kind)).logits
    model.export_peft_lora(tmp_path, max_rank=8)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == 3
    with torch.no_grad():
        served = PeftModel.from_pretrained(TINY_MODELS[kind](0), tmp_path).eval()(**model_inputs(kind)).logits
    torch.testing.assert_close(served, expected, atol=1e-5, rtol=0)


def test_full_rank_delta_is_refused_with_the_truncation_error(tmp_path):
    model = vera(low_rank=None)
    worst = max(
        ((name, spectrum_error(model.delta_weight(name), 16)) for name in model.lora_factors()), key=lambda x: x[1]
    )
    with pytest.raises(ConfigError) as info:
        model.export_peft_lora(tmp_path / "out", max_rank=16)
    message = str(info.value)
    assert "\n" not in message and "max_rank=16" in message and "allow_truncation=True" in message
    assert repr(worst[0]) in message and f"{worst[1]:.3g}" in message, (worst, message)
    assert not (tmp_path / "out").exists()  # refused before anything is written


@pytest.mark.parametrize("name", projection_names())
def test_allow_truncation_writes_the_best_cut_and_records_its_error(name: str, tmp_path):
    """Every method: the export at max_rank = r − 1 is refused, then with allow_truncation it holds the SVD's
    best rank-(r − 1) ΔW of every module (Eckart–Young, plain torch) and records each error."""
    config = AdapterConfig(projection=name, rank=4, projection_kwargs=PROJECTION_CASES[name], target_modules=TARGETS)
    model = attach(tiny_llama(), config)
    perturb(model)
    ranks = {n: int(torch.linalg.matrix_rank(model.delta_weight(n).double(), rtol=1e-6)) for n in model.lora_factors()}
    k = max(ranks.values()) - 1
    with pytest.raises(ConfigError, match=rf"^max_rank={k} cannot be met exactly: .*allow_truncation=True$"):
        model.export_peft_lora(tmp_path, max_rank=k)
    model.export_peft_lora(tmp_path, max_rank=k, allow_truncation=True)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == k
    record = json.loads((tmp_path / "lorazoo_export.json").read_text())
    assert record["truncated"] is True and record["max_rank"] == k
    for module, exported in exported_deltas(tmp_path).items():
        delta = model.delta_weight(module).detach().double()
        u, sigma, vh = torch.linalg.svd(delta, full_matrices=False)
        best = (u[:, :k] * sigma[:k]) @ vh[:k]
        torch.testing.assert_close(exported.double(), best, atol=1e-5, rtol=0)
        expected_error = spectrum_error(delta, k) if ranks[module] > k else 0.0
        # equal up to ΔW's fp32 resolution (a tail below it counts as exact: 0)
        assert record["modules"][module]["relative_error"] == pytest.approx(expected_error, rel=1e-4, abs=1e-5)
    assert record["max_relative_error"] == pytest.approx(max(m["relative_error"] for m in record["modules"].values()))
    assert "TRUNCATED" in (tmp_path / "README.md").read_text()


def test_a_limit_at_or_over_the_rank_changes_nothing(tmp_path):
    model = attach(tiny_bert(), AdapterConfig(projection="lora", rank=4))
    perturb(model)
    model.export_peft_lora(tmp_path / "plain")
    model.export_peft_lora(tmp_path / "limited", max_rank=4)
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        assert (tmp_path / "plain" / file).read_bytes() == (tmp_path / "limited" / file).read_bytes()
    assert not (tmp_path / "limited" / "lorazoo_export.json").exists()


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8", True, None])
def test_an_invalid_max_rank_is_one_line_naming_it(bad, tmp_path):
    model = attach(tiny_bert(), AdapterConfig(projection="lora", rank=4))
    if bad is None:  # None means no limit
        model.export_peft_lora(tmp_path, max_rank=bad)
        return
    with pytest.raises(ConfigError, match=rf"^max_rank={bad!r} is invalid; valid: a positive integer [^\n]*$"):
        model.export_peft_lora(tmp_path, max_rank=bad)


def test_export_script_takes_the_serving_limit(tmp_path, capsys):
    """lorazoo-export (scripts/export_peft.py) --max-rank: refused in one line (exit 2) over the limit, written with
    --allow-truncation, exact under it."""
    from lorazoo import export_peft as script

    base_dir = tmp_path / "base"
    tiny_llama().save_pretrained(base_dir)
    for name, low_rank in (("full", None), ("low", 5)):
        model = vera(low_rank)
        model.adapter_config.base_model_name_or_path = str(base_dir)
        model.save_adapter(tmp_path / name)
    capsys.readouterr()  # drop save_pretrained's progress output
    assert script.main([str(tmp_path / "full"), str(tmp_path / "refused"), "--max-rank", "16"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not progress bars
    assert len(errors) == 1 and errors[0].startswith("error: max_rank=16 cannot be met exactly"), errors
    assert not (tmp_path / "refused").exists()
    assert script.main([str(tmp_path / "full"), str(tmp_path / "cut"), "--max-rank", "16", "--allow-truncation"]) == 0
    assert "TRUNCATED to rank 16" in capsys.readouterr().out
    assert script.main([str(tmp_path / "low"), str(tmp_path / "exact"), "--max-rank", "8"]) == 0
    assert "r=5," in capsys.readouterr().out
    assert json.loads((tmp_path / "exact" / "lorazoo_export.json").read_text())["truncated"] is False
