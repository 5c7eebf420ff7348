"""The pieces of the fair protocol: a held-in dev split carved from train (lr search never sees dev) and
``trainer.init_adapter`` (start θ from a saved adapter, as LoRA's MNLI start for MRPC/RTE/STS-B)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import compose_config
from safetensors.torch import load_file

from lorazoo.errors import ConfigError
from lorazoo.train import build_task, run

TINY = [
    "logger=none",
    "model=tiny_bert",
    "trainer.batch_size=8",
    "trainer.eval_batch_size=16",
    "trainer.progress_bar=false",
    "task.max_train_samples=32",
    "task.max_eval_samples=16",
]


def train(out: Path, *overrides: str) -> dict:
    run(compose_config(*TINY, *overrides), output_dir=out)
    return json.loads((out / "metrics.json").read_text())


def write_sst2(root: Path, n_train: int = 60, n_dev: int = 12) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, n, tag in (("train.tsv", n_train, "train"), ("dev.tsv", n_dev, "dev")):
        rows = [f"{tag} sentence number {i}\t{i % 2}" for i in range(n)]
        (root / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return root


def test_holdout_dev_is_carved_from_train_and_seeded(tmp_path: Path):
    data = write_sst2(tmp_path / "SST-2")
    cfg = compose_config("task=glue/sst2", f"task.data_dir={data}", "task.holdout_dev=10")
    task = build_task(cfg.task, 0)
    task.load()
    held, trained = [r[0] for r in task.eval_rows], [r[0] for r in task.train_rows]
    assert len(held) == 10 and all(text.startswith("train ") for text in held)  # never the dev set
    assert not set(held) & set(trained) and len(trained) == 50
    again = build_task(cfg.task, 5)  # the training seed does not move the split; task.split_seed does
    again.load()
    assert [r[0] for r in again.eval_rows] == held
    other = build_task(
        compose_config("task=glue/sst2", f"task.data_dir={data}", "task.holdout_dev=10", "task.split_seed=1").task, 0
    )
    other.load()
    assert [r[0] for r in other.eval_rows] != held
    plain = build_task(compose_config("task=glue/sst2", f"task.data_dir={data}").task, 0)
    plain.load()
    assert all(r[0].startswith("dev ") for r in plain.eval_rows) and len(plain.train_rows) == 60


def test_holdout_dev_bad_values_are_one_line_errors(tmp_path: Path):
    data = write_sst2(tmp_path / "SST-2", n_train=8)
    with pytest.raises(ConfigError, match="leaves no training data"):
        build_task(compose_config("task=glue/sst2", f"task.data_dir={data}", "task.holdout_dev=8").task, 0).load()
    with pytest.raises(ConfigError, match="holdout_dev must be a positive integer"):
        build_task(compose_config("task=glue/sst2", "task.holdout_dev=0").task, 0)
    with pytest.raises(ConfigError, match="not supported by task 'math/gsm8k'"):
        build_task(compose_config("task=math/gsm8k", "+task.holdout_dev=5").task, 0)


@pytest.mark.parametrize("projection", ["lora", "vera"])
def test_init_adapter_starts_theta_from_saved_adapter_head_fresh(tmp_path: Path, projection: str):
    first = train(tmp_path / "a", f"projection={projection}", "projection.rank=4", "trainer.max_steps=2")
    saved = load_file(str(tmp_path / "a" / "adapter" / "adapter.safetensors"))
    # one step inside the linear warmup runs at lr 0: the second run's final adapter is exactly its starting point
    second = train(
        tmp_path / "b",
        f"projection={projection}",
        "projection.rank=4",
        "trainer.max_steps=1",
        "seed=3",
        "trainer.warmup_ratio=0.5",
        f"trainer.init_adapter={tmp_path / 'a' / 'adapter'}",
    )
    assert first["status"] == second["status"] == "completed"
    started = load_file(str(tmp_path / "b" / "adapter" / "adapter.safetensors"))
    projection_keys = [k for k in saved if k.startswith("projection.")]
    head_keys = [k for k in saved if k.startswith("modules_to_save.")]
    assert projection_keys and head_keys
    assert all(started[k].equal(saved[k]) for k in projection_keys)
    assert not all(started[k].equal(saved[k]) for k in head_keys)  # the head starts fresh (seed 3)
    config = json.loads((tmp_path / "b" / "adapter" / "adapter_config.json").read_text())
    assert config["config"]["seed"] == 0  # the structure is the saved adapter's (seed 0), not seed 3


def test_init_adapter_mismatch_names_the_field(tmp_path: Path):
    train(tmp_path / "a", "projection=lora", "projection.rank=4", "trainer.max_steps=1")
    with pytest.raises(ConfigError, match=r"has rank=4 but this run has rank=8"):
        train(
            tmp_path / "b",
            "projection=lora",
            "projection.rank=8",
            "trainer.max_steps=1",
            f"trainer.init_adapter={tmp_path / 'a' / 'adapter'}",
        )
    with pytest.raises(ConfigError, match="is not a directory"):
        train(tmp_path / "c", "projection=lora", f"trainer.init_adapter={tmp_path / 'missing'}")
    assert not (tmp_path / "b" / "adapter").exists()  # refused before anything trained
