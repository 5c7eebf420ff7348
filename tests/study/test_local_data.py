"""Local data everywhere: fair_compare takes run.py's data options, no experiment file fixes a data path (so
data_root reaches every experiment), and a missing file's error says which setting its path came from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import compose_config
from omegaconf import OmegaConf

from lorazoo.cli import CONFIG_DIR
from lorazoo.study import fair
from lorazoo.train import run
from lorazoo.train.errors import DataUnavailableError
from lorazoo.train.records.provenance import DATA_KEYS, data_path_origin
from lorazoo.train.stages.setup import apply_task_overrides
from lorazoo.train.tasks.data_root import apply_data_root


@pytest.mark.parametrize("option", ["data_root=/data", "task.data_dir=/data/glue/SST-2", "task.data_file=/d.json"])
def test_fair_compare_takes_run_py_data_options(tmp_path: Path, capsys, option: str):
    argv = ["--task", "glue/sst2", "--projections", "lora", "--trials", "2", "--seeds", "0", "--dry-run"]
    assert fair.main([*argv, "--out", str(tmp_path), option]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith("+ python run.py")]
    assert len(commands) == 2 and all(option in c.split() for c in commands)  # the search and the final seeds
    with pytest.raises(SystemExit) as usage:
        fair.main([*argv, "--out", str(tmp_path), "not-an-override"])
    assert usage.value.code == 2 and "key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fair.main(["--help"])
    shown = capsys.readouterr().out
    assert "data_root=" in shown and "task.data_dir=" in shown


def _data_paths(node, where=""):
    """(key, value) of every data-path key set to a value anywhere in a config tree (task_overrides included)."""
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = f"{where}.{key}" if where else str(key)
            if any(dotted.endswith(k) or str(key) == k for k in (*DATA_KEYS, "data_root")) and value:
                yield dotted, value
            yield from _data_paths(value, dotted)


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")))
def test_no_experiment_fixes_a_data_path(name: str):
    config = yaml.safe_load((Path(CONFIG_DIR) / "experiment" / f"{name}.yaml").read_text())
    assert not list(_data_paths(config)), f"experiment {name} hard-codes a data path"


@pytest.mark.parametrize("projection", ["lora", "unilora"])
@pytest.mark.parametrize("task", ["glue/sst2", "glue/stsb"])
def test_data_root_reaches_the_cpu_study(tmp_path: Path, projection: str, task: str):
    folder = {"glue/sst2": "SST-2", "glue/stsb": "STS-B"}[task]
    (tmp_path / "glue" / folder).mkdir(parents=True)
    cfg = compose_config(f"experiment=cpu_study_{projection}", f"task={task}", f"data_root={tmp_path}")
    cfg, _ = apply_task_overrides(cfg, [])
    cfg, chosen = apply_data_root(cfg)
    assert OmegaConf.select(cfg, "task.data_dir") == chosen == str(tmp_path / "glue" / folder)


@pytest.mark.parametrize(
    ("overrides", "applied", "data_from", "said"),
    [
        (["task.data_dir=/nope"], {}, None, "task.data_dir='/nope' came from the command line"),
        ([], {"task.data_dir": "/nope"}, None, "came from experiment 'study' (its task_overrides)"),
        ([], {}, "/nope", "task.data_dir='/nope' came from data_root='/root'"),
        ([], {}, None, "task.data_dir='/nope' came from the config files"),
    ],
)
def test_a_data_path_names_its_origin(overrides: list[str], applied: dict, data_from: str | None, said: str):
    cfg = OmegaConf.create({"name": "study", "data_root": "/root", "task": {"name": "glue/sst2", "data_dir": "/nope"}})
    text = data_path_origin(cfg, overrides, applied, data_from, "study")
    assert said in text and "data_root=<dir>" in text


def test_missing_file_error_says_the_path_came_from_data_root(tmp_path: Path):
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)  # the folder is there, its train.tsv is not
    cfg = compose_config("task=glue/sst2", "model=tiny_bert", "logger=none", f"data_root={tmp_path}")
    with pytest.raises(DataUnavailableError) as error:
        run(cfg, output_dir=tmp_path / "run")
    message = str(error.value)
    assert "train.tsv" in message and f"came from data_root={str(tmp_path)!r}" in message
    assert "\n" not in message
