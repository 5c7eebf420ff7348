"""configs/experiment/SOURCES.md pins every paper setting: each experiment × task composes to exactly the
values in its tables, every key an experiment sets is pinned, and every pinned key names its source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import compose_config
from omegaconf import OmegaConf

from lorazoo.cli import CONFIG_DIR
from lorazoo.errors import ConfigError
from lorazoo.train.stages.setup import apply_task_overrides

SOURCES = Path(CONFIG_DIR) / "experiment" / "SOURCES.md"
HEADING = re.compile(r"^## `([\w/.-]+)`")
# keys that decide a paper result: every GLUE experiment must pin each of them
GLUE_REQUIRED = {
    "projection.rank",
    "task.max_length",
    "trainer.num_epochs",
    "trainer.batch_size",
    "trainer.grad_accum",
    "trainer.warmup_ratio",
    "trainer.lr_scheduler",
    "optimizer.weight_decay",
}


def _cell(text: str):
    value = yaml.safe_load(text)
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
        return float(value)  # YAML 1.1 reads 5e-4 as a string; the tables mean the number
    return value


def parse_sources(text: str) -> dict[str, dict]:
    """{experiment: {"rows": {task: {key: value}}, "common": {key: value}, "sourced": set of keys with a source line}}."""
    out: dict[str, dict] = {}
    current = None
    in_sources = False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        match = HEADING.match(line)
        if match:
            current = out.setdefault(match.group(1), {"rows": {}, "common": {}, "sourced": set()})
            in_sources = False
        elif current is not None and line.startswith("| task |"):
            keys = [c.strip() for c in line.strip("|").split("|")][1:]
            i += 2  # skip the header separator
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                values = dict(zip(keys, map(_cell, cells[1:])))
                target = current["common"] if cells[0] == "*" else current["rows"].setdefault(cells[0], {})
                target.update(values)
                i += 1
            continue
        elif current is not None and line.startswith("Sources:"):
            in_sources = True  # the bullets below name each key's source
        elif current is not None and in_sources and line.startswith(("- ", "  ")):
            current["sourced"].update(re.findall(r"`((?:projection|task|trainer|optimizer|model)\.[\w.]+)`", line))
        i += 1
    return out


PINNED = parse_sources(SOURCES.read_text())
CASES = [(name, task) for name, spec in PINNED.items() for task in sorted(spec["rows"] or spec["common"])]


def resolved(experiment: str, task: str):
    return apply_task_overrides(compose_config(f"experiment={experiment}", f"task={task}"), [])[0]


def test_every_experiment_is_pinned():
    on_disk = {
        p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml") if not p.stem.startswith("cpu_study")
    }  # the CPU study is a budget, not a paper's setting
    assert on_disk == set(PINNED), (
        f"not pinned: {sorted(on_disk - set(PINNED))}; stale: {sorted(set(PINNED) - on_disk)}"
    )


@pytest.mark.parametrize("experiment,task", CASES, ids=[f"{e}:{t}" for e, t in CASES])
def test_resolved_config_equals_the_pinned_table(experiment: str, task: str):
    spec = PINNED[experiment]
    expected = {**spec["common"], **spec["rows"].get(task, {})}
    cfg = resolved(experiment, task)
    got = {
        key: OmegaConf.to_container(v)
        if OmegaConf.is_config(v := OmegaConf.select(cfg, key, default="<missing>"))
        else v
        for key in expected
    }
    assert got == expected
    if task.startswith("glue/"):
        assert GLUE_REQUIRED <= set(expected), f"{experiment} does not pin {sorted(GLUE_REQUIRED - set(expected))}"
    unsourced = set(expected) - spec["sourced"]
    assert not unsourced, f"{experiment}: pinned keys without a source line: {sorted(unsourced)}"


@pytest.mark.parametrize("experiment", sorted(PINNED))
def test_every_key_an_experiment_sets_is_pinned(experiment: str):
    """A value added to the yaml (or its task table) without a row here fails: nothing drifts unnoticed."""
    raw = yaml.safe_load((Path(CONFIG_DIR) / "experiment" / f"{experiment}.yaml").read_text())
    set_keys = set()

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and value and dotted not in ("projection.kwargs.train",):
                walk(value, dotted + ".")
            else:
                set_keys.add(dotted)

    walk({k: v for k, v in raw.items() if k in ("projection", "task", "trainer", "optimizer", "model")}, "")
    for entry in (raw.get("task_overrides") or {}).values():
        set_keys.update(entry)
    pinned = set(PINNED[experiment]["common"]) | {k for row in PINNED[experiment]["rows"].values() for k in row}
    free = {
        "trainer.eval_strategy",
        "trainer.eval_batch_size",
        "trainer.save_steps",
        "trainer.logging_steps",
        "task.source",
        "task.eval",
    }  # bookkeeping, not a paper value (task.source is pinned where it matters)
    assert not (set_keys - pinned - free), f"{experiment} sets unpinned keys {sorted(set_keys - pinned - free)}"


def test_changing_a_pinned_value_fails(tmp_path: Path):
    """The check above can fail: one edited lr in a copy of the table is caught."""
    text = SOURCES.read_text().replace("| glue/rte | 5.0e-4 | 80 | 32 | 8 |", "| glue/rte | 6.0e-4 | 80 | 32 | 8 |", 1)
    edited = parse_sources(text)
    assert edited["lora_glue"]["rows"]["glue/rte"]["optimizer.lr"] == 6.0e-4
    cfg = resolved("lora_glue", "glue/rte")
    assert OmegaConf.select(cfg, "optimizer.lr") != edited["lora_glue"]["rows"]["glue/rte"]["optimizer.lr"]


def test_a_task_outside_the_papers_table_is_refused():
    with pytest.raises(ConfigError, match="has no settings for task 'glue/mnli'"):
        resolved("unilora_glue_base", "glue/mnli")
