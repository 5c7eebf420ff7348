"""lorazoo.export_peft (lorazoo-export, scripts/export_peft.py): lorazoo adapter on a local base directory → PEFT
LoRA adapter with equal outputs."""

from __future__ import annotations

import torch
from helpers import model_inputs, perturb, tiny_bert

from lorazoo import AdapterConfig, attach, export_peft


def test_export_cli_round_trip(tmp_path, capsys):
    from peft import PeftModel
    from transformers import BertForSequenceClassification

    base_dir = tmp_path / "base"
    tiny_bert().save_pretrained(base_dir)
    model = attach(
        BertForSequenceClassification.from_pretrained(base_dir).eval(),
        AdapterConfig(projection="vera", rank=8, modules_to_save=["classifier"], base_model_name_or_path=str(base_dir)),
    )
    perturb(model)
    with torch.no_grad():
        expected = model(**model_inputs("bert")).logits
    model.save_adapter(tmp_path / "adapter")

    assert export_peft.main([str(tmp_path / "adapter"), str(tmp_path / "peft")]) == 0
    served = PeftModel.from_pretrained(
        BertForSequenceClassification.from_pretrained(base_dir), tmp_path / "peft"
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(served(**model_inputs("bert")).logits, expected, atol=1e-5, rtol=0)


def test_export_cli_needs_a_loadable_base(tmp_path, capsys):
    model = attach(tiny_bert(), AdapterConfig(projection="lora", rank=4, base_model_name_or_path="tiny:bert"))
    model.save_adapter(tmp_path / "adapter")
    assert export_peft.main([str(tmp_path / "adapter"), str(tmp_path / "out")]) == 2
    assert "--base" in capsys.readouterr().err
