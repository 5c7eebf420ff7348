"""Every option of every config group composes, and its values fit the runner's typed schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import compose_config
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

from lorazoo import projection_names
from lorazoo.cli import CONFIG_DIR
from lorazoo.train.engine.optimizer import OptimizerOptions
from lorazoo.train.options import LoggerOptions, ModelOptions, ProjectionOptions, TrainerOptions, from_node
from lorazoo.train.stages.setup import apply_task_overrides
from lorazoo.train.tasks import build_task

CONFIGS = Path(CONFIG_DIR)
GROUPS = ["projection", "optimizer", "task", "model", "trainer", "logger", "experiment", "hydra/launcher"]


def options(group: str) -> list[str]:
    root = CONFIGS / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


CASES = [(group, option) for group in GROUPS for option in options(group)]


def check_schema(cfg) -> None:
    """What the runner does first: typed options for each group (unknown keys in a yaml fail here)."""
    for cls, key in (
        (ProjectionOptions, "projection"),
        (OptimizerOptions, "optimizer"),
        (ModelOptions, "model"),
        (TrainerOptions, "trainer"),
        (LoggerOptions, "logger"),
    ):
        from_node(cls, cfg[key], key)
    build_task(cfg.task, cfg.seed)
    for name in OmegaConf.to_container(cfg.task_overrides) or {}:
        patched, _ = apply_task_overrides(OmegaConf.merge(cfg, {"task": {"name": name}}), [])
        from_node(TrainerOptions, patched.trainer, "trainer")
        from_node(OptimizerOptions, patched.optimizer, "optimizer")


def test_groups_exist_and_have_options():
    assert set(GROUPS) <= {g for g, _ in CASES}
    assert {"lora", "unilora"} <= set(options("projection"))
    assert {f"glue/{t}" for t in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")} <= set(options("task"))
    assert {"tweets", "math/gsm8k", "instruct/alpaca"} <= set(options("task"))
    assert {"joblib", "submitit_slurm"} <= set(options("hydra/launcher"))
    assert {
        "unilora_glue_base",
        "unilora_glue_large",
        "unilora_math",
        "vblora_glue",
        "vera_glue",
        "prolora_instruct",
    } <= set(options("experiment"))


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes(group: str, option: str):
    cfg = compose_config(f"{group}={option}", hydra=group.startswith("hydra"))
    if group.startswith("hydra"):
        assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")
        return
    check_schema(cfg)
    if group == "experiment":
        assert cfg.name  # every experiment names its W&B group
        assert (CONFIGS / group / f"{option}.yaml").read_text().startswith("# @package _global_")


def test_default_is_the_offline_demo():
    cfg = compose_config()
    assert (cfg.projection.name, cfg.model.name, cfg.task.name, cfg.logger.name, cfg.seed) == (
        "unilora",
        "minilm",
        "tweets",
        "wandb",
        0,
    )


def test_math_and_instruct_default_to_smollm2_but_model_override_wins():
    assert compose_config("task=math/gsm8k").model.name == "smollm2-135m"
    assert compose_config("task=instruct/alpaca").model.name == "smollm2-135m"
    assert compose_config("task=math/gsm8k", "model=tiny_llama").model.name == "tiny_llama"
    assert compose_config("experiment=unilora_math").model.name == "gemma-7b"


def test_experiment_task_table_and_command_line_precedence():
    cfg = compose_config("experiment=unilora_glue_base", "task=glue/rte")
    patched, applied = apply_task_overrides(cfg, [])
    assert patched.optimizer.groups.head.lr == 5.0e-4
    assert applied == {"optimizer.groups.head.lr": 5.0e-4, "trainer.num_epochs": 160}  # the Uni-LoRA RTE script
    assert patched.optimizer.groups.head.weight_decay == 0.1  # the experiment's head decay is kept beside it
    patched, applied = apply_task_overrides(cfg, ["optimizer.groups.head.lr=0.1"])
    assert applied == {"trainer.num_epochs": 160} and patched.optimizer.groups.head.get(
        "lr"
    ) == cfg.optimizer.groups.head.get("lr")


def test_unknown_group_option_lists_valid_ones():
    with pytest.raises(ConfigCompositionException, match="unilora"):
        compose_config("projection=unilorra")


def test_misspelled_key_is_rejected():
    with pytest.raises(ConfigCompositionException, match="max_stepz"):
        compose_config("trainer.max_stepz=3")


def test_misspelled_key_inside_a_yaml_is_rejected():
    cfg = compose_config()
    with open_dict(cfg.trainer):
        cfg.trainer.bach_size = 8  # what a typo in an experiment file produces
    with pytest.raises(Exception, match="bach_size"):
        check_schema(cfg)


def test_sweep_dirs_are_unique_per_job():
    cfg = compose_config(hydra=True)
    assert "${hydra.job.num}" in OmegaConf.to_container(cfg.hydra.sweep)["subdir"]


@pytest.mark.parametrize("name", options("projection"))
def test_projection_option_defaults_live_in_the_class_only(name: str):
    """configs/projection/<name>.yaml gets every option from the projection's Options dataclass (so each is
    overridable as projection.kwargs.<key>) and restates none of its defaults."""
    import yaml

    from lorazoo.projections import get_projection_class

    defaults = get_projection_class(name).defaults
    composed = OmegaConf.to_container(compose_config(f"projection={name}").projection.kwargs)
    assert composed == defaults
    written = (yaml.safe_load((CONFIGS / "projection" / f"{name}.yaml").read_text())["projection"] or {}).get(
        "kwargs"
    ) or {}
    restated = sorted(k for k, v in written.items() if defaults.get(k) == v)
    assert not restated, f"{name}.yaml restates the class defaults of {restated}"


def test_command_line_overrides_a_projection_option():
    assert (
        compose_config("projection=vblora", "projection.kwargs.vector_length=128").projection.kwargs.vector_length
        == 128
    )
    with pytest.raises(ConfigCompositionException):
        compose_config("projection=vblora", "projection.kwargs.vector_lenght=128")


@pytest.mark.parametrize("name", projection_names())
def test_every_projection_declares_its_paper_settings(name: str):
    """``projection=<name>`` and ``lr_<name>`` are derived from this declaration: every method needs one."""
    from lorazoo.projections import PaperSettings, get_projection_class

    paper = get_projection_class(name).paper
    assert isinstance(paper, PaperSettings), f"{name} declares no paper = PaperSettings(...)"
    assert paper.rank > 0 and paper.lr > 0 and all(lr > 0 for _, lr in paper.group_lrs)
    assert paper.source.strip(), f"{name}: each paper value needs its source"


@pytest.mark.parametrize("name", options("projection"))
def test_projection_yaml_agrees_with_the_paper_declaration(name: str):
    """A configs/projection yaml replaces the derived node (for its comments): its values may not drift."""
    from lorazoo.projections import get_projection_class
    from lorazoo.train.config.store import projection_node

    paper = get_projection_class(name).paper
    assert paper is not None, f"configs/projection/{name}.yaml has no paper declaration to agree with"
    derived = projection_node(name, paper)
    cfg = compose_config(f"projection={name}")
    written = {k: cfg.projection[k] for k in derived["projection"]}
    assert written == derived["projection"], f"{name}.yaml vs {name}.py paper"
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (paper.lr, paper.weight_decay)
    groups = {g: v["lr"] for g, v in OmegaConf.to_container(cfg.optimizer.groups).items() if g != "head"}  # task's
    assert groups == dict(paper.group_lrs)


@pytest.mark.parametrize("name", projection_names())
def test_lr_sweeper_searches_each_declared_lr(name: str):
    """hydra/sweeper=lr_<name>: log-uniform over 1/10 .. 100 × each declared lr (each group lr where declared)."""
    from lorazoo.projections import get_projection_class

    paper = get_projection_class(name).paper
    assert paper is not None
    expected = {f"optimizer.groups.{g}.lr": lr for g, lr in paper.group_lrs} or {"optimizer.lr": paper.lr}
    params = compose_config(f"hydra/sweeper=lr_{name}", f"projection={name}", hydra=True).hydra.sweeper.params
    assert set(params) == set(expected)
    for key, lr in expected.items():
        low, high = (float(x) for x in re.fullmatch(r"tag\(log, interval\((\S+), (\S+)\)\)", params[key]).groups())
        assert (low, high) == (pytest.approx(lr / 10, rel=1e-12), pytest.approx(lr * 100, rel=1e-12))


@pytest.mark.parametrize("lr", [4e-4, 2e-4, 1e-3, 1e-2, 5e-3, 4e-3, 3e-5])
def test_lr_interval_is_written_in_decimal(lr: float):
    """4e-4 / 10 is written 4e-05, not 3.9999999999999996e-05 (the sweep's log files show these values)."""
    from lorazoo.train.config.store import log_interval

    low, high = re.fullmatch(r"tag\(log, interval\((\S+), (\S+)\)\)", log_interval(lr)).groups()
    assert len(low) <= 6 and len(high) <= 6, (low, high)


@pytest.mark.parametrize("name", projection_names())
def test_a_rank_other_than_the_paper_one_is_the_users_choice(name: str):
    """Model fitting scales only the paper defaults (yaml or derived node): a rank set elsewhere (an experiment,
    task_overrides) is explicit, so a value that cannot work is an error, never silently refitted."""
    import dataclasses

    from lorazoo.train.config.model_fit import set_elsewhere

    opts = from_node(ProjectionOptions, compose_config(f"projection={name}").projection, "projection")
    assert set_elsewhere(opts) == set()
    assert "projection.rank" in set_elsewhere(dataclasses.replace(opts, rank=opts.rank + 1))


@pytest.mark.parametrize("name", projection_names())
def test_count_params_uses_the_rank_projection_composes_to(name: str):
    """lorazoo-count's "this machine" rows: the rank of projection=<name>, yaml or derived."""
    from lorazoo.counting_tables import projection_defaults

    assert projection_defaults(name)[0] == compose_config(f"projection={name}").projection.rank
