"""End-to-end runs of the Hydra runner on tiny random models: every task type, resume, NaN stop, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import SHARED_DATA, run_py, tiny_job, train_killed_at_step, train_tiny
from safetensors.torch import load_file

from lorazoo.train.engine.trainer import COMPLETE_MARKER, LoraZooTrainer
from lorazoo.train.errors import NonFiniteLossError

BASE_KEYS = {
    "status",
    "task",
    "projection",
    "model",
    "seed",
    "metrics",
    "parameters",
    "trainable",
    "D",
    "steps",
    "wall_time_s",
    "command",
    "argv",
    "adapter_dir",
}


def check_record(record: dict, out: Path, keys: set[str], steps: int) -> None:
    assert record["status"] == "completed" and record["steps"] == steps
    headline = keys - {"loss"}  # the task's own metrics are also copied to the top level
    assert BASE_KEYS | headline <= set(record), sorted(BASE_KEYS | headline - set(record))
    assert record["trainable"] == record["parameters"]["trainable"] > 0 and record["D"] > 0
    for key in keys - {"majority_rate"}:
        assert math.isfinite(record["metrics"][key])
    assert (out / "adapter" / "adapter.safetensors").is_file() and (out / "adapter" / "adapter_config.json").is_file()


def adapter_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter.safetensors"))


def test_tweets_tiny_bert(tmp_path: Path):
    record = train_tiny(
        tmp_path,
        "model=tiny_bert",
        "projection=lora",
        "task.max_train_samples=48",
        "task.max_eval_samples=32",
        "trainer.max_steps=3",
        "trainer.save_steps=2",
    )
    check_record(record, tmp_path, {"accuracy", "majority_rate"}, steps=3)
    assert record["accuracy"] == record["metrics"]["accuracy"] and 0 < record["majority_rate"] < 1
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    files = {p.name for p in checkpoint.iterdir()}
    # adapter-only checkpoints: the adapter + Trainer's resume state, never the base weights
    assert {
        "adapter.safetensors",
        "adapter_config.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "trainer_state.json",
        COMPLETE_MARKER,
    } <= files
    assert not files & {"model.safetensors", "pytorch_model.bin", "training_args.bin"}
    saved = adapter_tensors(checkpoint)
    assert sum(t.numel() for k, t in saved.items() if k.startswith("projection.")) == record["trainable"]


@pytest.mark.parametrize("subset,keys", [("sst2", {"accuracy", "majority_rate"}), ("stsb", {"pearson", "spearmanr"})])
def test_glue_from_local_tsv(tmp_path: Path, subset: str, keys: set[str]):
    folder = SHARED_DATA / "glue" / {"sst2": "SST-2", "stsb": "STS-B"}[subset]
    if not (folder / "dev.tsv").exists():
        pytest.skip(f"{folder} absent")
    record = train_tiny(
        tmp_path,
        "model=tiny_bert",
        "projection=lora",
        f"task=glue/{subset}",
        f"task.data_dir={folder}",
        "task.max_train_samples=32",
        "task.max_eval_samples=32",
        "trainer.max_steps=2",
    )
    check_record(record, tmp_path, keys, steps=2)


def test_gsm8k_tiny_llama(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
        for i in range(12)
    ]
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    record = train_tiny(
        out,
        "model=tiny_llama",
        "projection=lora",
        "task=math/gsm8k",
        f"task.data_dir={data}",
        "task.max_eval_samples=3",
        "task.max_new_tokens=4",
        "task.max_length=64",
        "trainer.max_steps=2",
    )
    check_record(record, out, {"exact_match", "loss"}, steps=2)
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 3 and {"generation", "prediction", "reference", "correct"} <= set(predictions[0])


def test_alpaca_tiny_llama(tmp_path: Path):
    records = [
        {"instruction": f"Repeat the word number {i}.", "input": "" if i % 2 else f"word{i}", "output": f"word{i}"}
        for i in range(20)
    ]
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "run"
    record = train_tiny(
        out,
        "model=tiny_llama",
        "projection=lora",
        "task=instruct/alpaca",
        f"task.data_file={data}",
        "task.eval_size=4",
        "task.num_generations=2",
        "task.max_new_tokens=4",
        "task.max_length=96",
        "trainer.max_steps=2",
    )
    check_record(record, out, {"perplexity", "loss"}, steps=2)
    assert record["metrics"]["perplexity"] == pytest.approx(math.exp(record["metrics"]["loss"]), rel=1e-6)
    assert len((out / "generations.jsonl").read_text().splitlines()) == 2


def test_resume_is_bit_equal_to_an_uninterrupted_run(tmp_path: Path, monkeypatch):
    args = [
        "model=tiny_bert",
        "projection=lora",
        "task.max_train_samples=40",
        "task.max_eval_samples=16",
        "trainer.max_steps=6",
        "trainer.save_steps=2",
        "projection.dropout=0.1",
        "seed=5",
    ]
    train_tiny(tmp_path / "straight", *args)
    train_killed_at_step(monkeypatch, tmp_path / "resumed", 3, *args)
    record = train_tiny(tmp_path / "resumed", *args, "trainer.resume=true")
    assert record["train"]["resumed_from"].endswith("checkpoint-2")
    a, b = adapter_tensors(tmp_path / "straight" / "adapter"), adapter_tensors(tmp_path / "resumed" / "adapter")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch):
    original = LoraZooTrainer.compute_loss

    def poisoned(self, model, inputs, *a, **k):
        out = original(self, model, inputs, *a, **k)
        if self.state.global_step == 2:
            return out * float("nan") if not isinstance(out, tuple) else (out[0] * float("nan"), *out[1:])
        return out

    monkeypatch.setattr(LoraZooTrainer, "compute_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 3.*checkpoint-2"):
        train_tiny(
            tmp_path,
            "model=tiny_bert",
            "projection=lora",
            "task.max_train_samples=40",
            "task.max_eval_samples=8",
            "trainer.max_steps=5",
            "trainer.save_steps=2",
        )
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "NonFiniteLossError" in record["error"]
    good = tmp_path / "checkpoints" / "checkpoint-2"
    assert (good / COMPLETE_MARKER).exists() and not (tmp_path / "checkpoints" / "checkpoint-4").exists()
    assert all(torch.isfinite(t).all() for t in adapter_tensors(good).values())


def test_wandb_offline_run(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    record = train_tiny(
        tmp_path,
        "model=tiny_bert",
        "projection=lora",
        "task.max_train_samples=16",
        "task.max_eval_samples=8",
        "trainer.max_steps=1",
        "logger=wandb",
    )
    assert record["status"] == "completed"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


# ----------------------------------------------------------------------------- the command line
def test_cli_errors_are_one_line(tmp_path: Path):
    out = run_py("task=glue/sst2", "model=tiny_bert", "logger=none", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert errors[-1].startswith("error: ") and "task.data_dir=" in errors[-1] and "Traceback" not in out.stderr
    unknown = run_py("projection=unilorra", cwd=tmp_path)
    assert unknown.returncode != 0 and "lora" in unknown.stderr and "Traceback" not in unknown.stderr


def test_multirun_one_dir_and_metrics_per_job(tmp_path: Path):
    sweep = tmp_path / "sweep"
    job = tiny_job(16, 8, "projection.rank=4", "trainer.max_steps=1", "trainer.batch_size=8", projection="lora,vera")
    out = run_py("-m", *job, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    records = sorted(sweep.glob("*/metrics.json"))
    assert len(records) == 2
    assert sorted(json.loads(p.read_text())["projection"] for p in records) == ["lora", "vera"]
    assert all(json.loads(p.read_text())["status"] == "completed" for p in records)


@pytest.mark.slow
def test_multirun_minilm_lora_unilora(tmp_path: Path):
    sweep = tmp_path / "sweep"
    out = run_py(
        "-m",
        "projection=lora,unilora",
        "task.max_train_samples=32",
        "task.max_eval_samples=32",
        "trainer.max_steps=2",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert [r["projection"] for r in records] == ["lora", "unilora"] and all(r["model"] == "minilm" for r in records)
    # Uni-LoRA's d is fitted to MiniLM (D = 36,864 at r=4 on query/value) at the paper's d/D of RoBERTa-base
    assert records[1]["D"] == 36864 and records[1]["trainable"] == 36864 * 23040 // 147456


def test_hub_model_offline_and_mismatched_task_fail_fast(tmp_path: Path):
    from lorazoo import LoraZooError

    with pytest.raises(LoraZooError, match=r"model\.pretrained=<local dir>"):
        train_tiny(tmp_path, "model=roberta-base", "task.max_train_samples=8", "task.max_eval_samples=8")
    with pytest.raises(LoraZooError, match="causal_lm"):
        train_tiny(tmp_path, "model=tiny_bert", "task=math/gsm8k")
