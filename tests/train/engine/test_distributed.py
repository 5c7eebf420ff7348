"""Data parallelism through the engines (torchrun + Trainer/accelerate DDP on gloo): one launch on N
processes equals one process at the same global batch, and writes one run directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import RUN_PY, tiny_bert, tiny_llama
from helpers.parallel import COMMON, NO_DROPOUT, assert_same_run, torchrun_two, train_in_process
from safetensors.torch import load_file

from lorazoo import AdapterConfig, attach
from lorazoo.train.engine.distributed import (
    check_data_parallel,
    check_engine,
    follower_overrides,
    scale_arguments,
)
from lorazoo.train.errors import ConfigError
from lorazoo.train.options import TrainerOptions


def gsm8k_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(24)]
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def case_overrides(case: str, tmp: Path) -> list[str]:
    if case == "classification":
        return [
            "model=tiny_bert",
            "projection=unilora",
            "projection.kwargs.d=64",
            "task.max_train_samples=48",
            "task.max_eval_samples=16",
            *NO_DROPOUT,
        ]
    data = gsm8k_files(tmp / "gsm8k")
    return [
        "model=tiny_llama",
        "projection=vera",
        "task=math/gsm8k",
        f"task.data_dir={data}",
        "task.max_eval_samples=4",
        "task.max_new_tokens=2",
        "task.max_length=48",
    ]


def run_py_on_two(tmp_path: Path, overrides: list[str], two: Path) -> subprocess.CompletedProcess:
    """``run.py`` under torchrun, 2 processes on gloo, into the run dir ``two``; the cwd is ``tmp_path/cwd``."""
    # no hydra.run.dir: each rank's Hydra would pick its own time-stamped dir; rank 0's must be the only one
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return torchrun_two(RUN_PY, *COMMON, *overrides, f"hydra.run.dir={two}", cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["classification", "causal_lm"])
def test_torchrun_two_processes_equal_one_process_at_the_same_global_batch(tmp_path: Path, case: str):
    overrides = case_overrides(case, tmp_path)
    train_in_process(tmp_path / "one", *overrides, "trainer.batch_size=8")
    two, cwd = tmp_path / "two", tmp_path / "cwd"
    done = run_py_on_two(tmp_path, [*overrides, "trainer.batch_size=4"], two)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("metrics.json")) == [
        "one/metrics.json",
        "two/metrics.json",
    ]
    assert [p.name for p in (two / "checkpoints").iterdir()] == ["checkpoint-3"]
    assert not list(cwd.iterdir())  # rank 1 left no stray run directory behind
    assert done.stdout.count("[lorazoo]") == 1  # one summary line: rank 0's
    assert_same_run(tmp_path / "one", two)


@pytest.mark.slow
def test_torchrun_train_loss_is_the_global_mean_over_every_step(tmp_path: Path):
    """No log inside the run (logging_steps > max_steps): Trainer's train_loss was rank 0's own loss
    (seen: 1.09806 against 1.09558); every step's loss must be the mean over both ranks."""
    overrides = [*case_overrides("classification", tmp_path), "trainer.logging_steps=10", "trainer.max_steps=4"]
    one = train_in_process(tmp_path / "one", *overrides, "trainer.save_steps=4", "trainer.batch_size=8")
    done = run_py_on_two(tmp_path, [*overrides, "trainer.save_steps=4", "trainer.batch_size=4"], tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["train"]["train_loss_steps"] == one["train"]["train_loss_steps"] == 4
    assert two["train"]["train_loss"] == pytest.approx(one["train"]["train_loss"], abs=1e-6)


# ----------------------------------------------------------------------------- the loss scaling, in process
@pytest.mark.parametrize("kind,expected", [("bert", False), ("llama", True)])
def test_attached_model_reports_whether_its_loss_uses_num_items_in_batch(kind: str, expected: bool):
    from transformers import Trainer, TrainingArguments

    base = tiny_bert() if kind == "bert" else tiny_llama()
    targets = ["query", "value"] if kind == "bert" else "all-linear"
    model = attach(base, AdapterConfig(projection="lora", rank=2, target_modules=targets))
    assert model.accepts_loss_kwargs is expected
    trainer = Trainer(model=model, args=TrainingArguments(output_dir="/nonexistent", use_cpu=True, report_to=[]))
    assert trainer.model_accepts_loss_kwargs is expected


def test_gradient_accumulation_equals_the_big_batch(tmp_path: Path):
    """A sequence-classification loss is a batch mean: Trainer must divide it by the accumulation steps."""
    args = ["model=tiny_bert", "projection=lora", "task.max_train_samples=48", "task.max_eval_samples=8", *NO_DROPOUT]
    big = train_in_process(tmp_path / "big", *args, "trainer.batch_size=8")
    accumulated = train_in_process(tmp_path / "acc", *args, "trainer.batch_size=4", "trainer.grad_accum=2")
    assert big["train"]["train_loss"] == pytest.approx(accumulated["train"]["train_loss"], abs=1e-6)
    a = load_file(str(tmp_path / "big" / "adapter" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "acc" / "adapter" / "adapter.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


# ----------------------------------------------------------------------------- launch checks
def test_a_launch_trainer_would_not_parallelise_is_refused(monkeypatch):
    from transformers.training_args import ParallelMode

    monkeypatch.setenv("WORLD_SIZE", "2")
    # what TrainingArguments reported under torchrun on a CPU machine before use_cpu followed the device
    args = SimpleNamespace(world_size=1, parallel_mode=ParallelMode.NOT_DISTRIBUTED)
    with pytest.raises(ConfigError, match=r"launched 2 processes.*trainer.use_cpu=true"):
        check_data_parallel(args)


def test_ranks_after_the_first_get_a_scratch_hydra_dir(monkeypatch):
    argv = ["model=tiny_bert", "hydra.run.dir=/shared/run"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert follower_overrides(argv) == argv
    monkeypatch.setenv("RANK", "1")
    theirs = follower_overrides(argv)
    assert theirs[0] == "model=tiny_bert" and "hydra.run.dir=/shared/run" not in theirs
    scratch = Path(theirs[1].split("=", 1)[1]).parent
    assert scratch.is_dir() and "rank1" in scratch.name and "hydra.output_subdir=null" in theirs
    scratch.rmdir()


def test_scale_options_reach_training_arguments():
    kwargs = scale_arguments(
        TrainerOptions(
            use_cpu=False,
            ddp_backend="nccl",
            ddp_find_unused_parameters=False,
            fsdp="full_shard auto_wrap",
            fsdp_config={"fsdp_version": 2},
        )
    )
    assert not kwargs["use_cpu"] and kwargs["ddp_backend"] == "nccl" and kwargs["ddp_find_unused_parameters"] is False
    assert kwargs["fsdp"] == "full_shard auto_wrap" and kwargs["fsdp_config"] == {"fsdp_version": 2}
    assert scale_arguments(TrainerOptions(use_cpu=True, ddp_backend="gloo"))["use_cpu"]
    assert scale_arguments(TrainerOptions())["use_cpu"] is (not torch.cuda.is_available())
    with pytest.raises(ConfigError, match="trainer.ddp_backend='glue'"):
        scale_arguments(TrainerOptions(ddp_backend="glue"))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['full_shrd'\]"):
        scale_arguments(TrainerOptions(fsdp="full_shrd"))
    with pytest.raises(ConfigError, match="both set"):
        scale_arguments(TrainerOptions(fsdp="full_shard", deepspeed="zero2.json"))


@pytest.mark.parametrize("engine", [{"fsdp": "full_shard auto_wrap"}, {"deepspeed": "zero2.json"}])
def test_fsdp_or_deepspeed_on_cpu_is_refused_not_quietly_ddp(engine: dict):
    """accelerate runs neither on CPU: Trainer would silently train plain DDP (seen with torchrun, gloo)."""
    with pytest.raises(ConfigError, match=r"needs GPUs, but this job runs on CPU"):
        scale_arguments(TrainerOptions(use_cpu=True, **engine))


def test_an_engine_trainer_did_not_set_up_is_refused():
    t = TrainerOptions(fsdp="full_shard auto_wrap")
    trainer = SimpleNamespace(
        is_fsdp_enabled=False, is_deepspeed_enabled=False, accelerator=SimpleNamespace(distributed_type="MULTI_CPU")
    )
    with pytest.raises(ConfigError, match="not taken up"):
        check_engine(trainer, t)
    check_engine(SimpleNamespace(is_fsdp_enabled=True, is_deepspeed_enabled=False), t)
