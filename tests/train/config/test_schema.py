"""Every config key typed: each leaf key of each composed config, fed a wrong type, zero, a negative and
a huge value, is accepted or refused in ONE ConfigError line naming the key — never a TypeError deep inside;
the command-line cases as real `python run.py` processes; resource sizes bounded before any
allocation; no `${oc.env:...}` value written to a record; no traceback for a LoraZooError or an OSError."""

from __future__ import annotations

import copy
import errno
import functools
import json
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import compose_config, group_options
from helpers.forked_cli import run_cli
from omegaconf import OmegaConf, open_dict

from lorazoo.cli import CONFIG_DIR
from lorazoo.errors import ConfigError
from lorazoo.projections import get_projection_class, projection_names
from lorazoo.projections.options import parse_options
from lorazoo.train.config import schema as config_schema
from lorazoo.train.records.config_diff import flatten

# compositions that between them hold every key of every group (each projection's kwargs, each task family)
COMPOSITIONS: dict[str, list[str]] = {
    "tweets": ["model=tiny_bert", "logger=wandb"],
    "glue": ["model=tiny_bert", "task=glue/sst2"],
    "math": ["model=tiny_llama", "task=math/gsm8k"],
    "alpaca": ["model=tiny_llama", "task=instruct/alpaca"],
    **{f"projection={name}": ["model=tiny_bert", f"projection={name}"] for name in projection_names()},
}
HUGE = 10**12


@functools.cache
def _composed(overrides: tuple[str, ...]) -> Any:
    return compose_config(*overrides)


def cached_config(overrides: list[str]) -> Any:
    """A fresh copy of the composed config (composing takes ~0.5 s; each composition is composed once)."""
    return copy.deepcopy(_composed(tuple(overrides)))


def validate(cfg: Any) -> None:
    """What a run checks before anything loads: the schema, then the projection's own options (D unknown yet)."""
    plain = config_schema.check(cfg)
    projection = plain["projection"]
    cls = get_projection_class(projection["name"])
    parse_options(cls.name, cls.Options, projection.get("kwargs") or {}, {"D": 2**62, "rank": projection["rank"]})


def _leaf_cases() -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for name, overrides in COMPOSITIONS.items():
        raw = OmegaConf.to_container(cached_config(overrides), resolve=False)
        for key in flatten(raw):
            seen.setdefault(key, name)
    return sorted((composition, key) for key, composition in seen.items())


LEAVES = _leaf_cases()


def _bad_values(current: Any) -> list[Any]:
    wrong = {"not": "a scalar"} if isinstance(current, str) else "abc"
    return [wrong, 0, -1, HUGE]


def test_every_composition_is_valid_as_shipped():
    for overrides in COMPOSITIONS.values():
        validate(cached_config(overrides))


@pytest.mark.parametrize(("composition", "key"), LEAVES, ids=[k for _, k in LEAVES])
def test_every_key_refuses_bad_values_in_one_line_naming_it(composition: str, key: str):
    cfg = cached_config(COMPOSITIONS[composition])
    current = OmegaConf.select(cfg, key)
    kwarg = key.startswith("projection.kwargs.")
    named = f"{key.rsplit('.', 1)[1]}=" if kwarg else key  # a projection option is named as its Options field
    for value in _bad_values(current):
        changed = cfg.copy()
        with open_dict(changed):
            OmegaConf.update(changed, key, value, merge=False)
        try:
            validate(changed)
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message, f"{key}={value!r}: more than one line: {message!r}"
            assert named in message, f"{key}={value!r}: the message does not name the key: {message!r}"
            assert "valid" in message, f"{key}={value!r}: the message does not say what is valid: {message!r}"
        except Exception as exc:  # a TypeError/ValueError from inside is the traceback wall this test forbids
            pytest.fail(f"{key}={value!r}: {type(exc).__name__}: {exc}")


# values users gave that once failed deep inside: each must be refused in the schema, naming the key
REFUSED = [
    ("trainer.max_steps", "abc"),
    ("trainer.warmup_ratio", "abc"),
    ("trainer.eval_steps", "abc"),
    ("trainer.ddp_timeout", "abc"),
    ("trainer.num_epochs", 0),
    ("trainer.max_steps", 0),
    ("trainer.batch_size", 0),
    ("trainer.eval_batch_size", -1),
    ("trainer.num_workers", HUGE),
    ("trainer.logging_steps", 0),
    ("task.max_eval_samples", 0),
    ("task.max_train_samples", 0),
    ("seed", -1),
    ("seed", 2**32),
    ("projection.rank", 0),
    ("projection.rank", HUGE),
    ("optimizer.lr", 0),
    ("eval.lm_eval.limit", 0),
    ("trainer.fsdp_config.fsdp_version", 3),
    ("model.name", 5),
]


@pytest.mark.parametrize(("key", "value"), REFUSED, ids=[f"{k}={v}" for k, v in REFUSED])
def test_known_bad_values_are_refused(key: str, value: Any):
    cfg = cached_config(["model=tiny_bert"])
    OmegaConf.update(cfg, key, value, merge=False)
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=.* is invalid; valid: "):
        config_schema.check(cfg)


def test_every_numeric_key_has_declared_bounds():
    """A new int/float key without bounds in config_schema.BOUNDS fails here, not in a user's run."""
    missing = []
    for _, key in LEAVES:
        if key.startswith(("projection.kwargs.", "model.dims.", "task_overrides.")):
            continue
        cfg = cached_config(COMPOSITIONS[dict((k, c) for c, k in LEAVES)[key]])
        value = OmegaConf.select(cfg, key)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and config_schema._bound_key(key) not in config_schema.BOUNDS:
            missing.append(key)
    assert not missing, f"numeric keys without bounds: {missing}"


def test_unset_environment_variable_is_one_line_naming_the_key():
    cfg = cached_config(["model=tiny_bert", "model.pretrained=${oc.env:LORAZOO_NO_SUCH_VAR}"])
    with pytest.raises(ConfigError) as caught:
        config_schema.check(cfg)
    assert str(caught.value).startswith("model.pretrained='${oc.env:LORAZOO_NO_SUCH_VAR}' cannot be resolved")
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------- resources, before allocation
def _preflight(*overrides: str) -> None:
    from lorazoo.train.config import preflight
    from lorazoo.train.config.model_fit import meta_layout
    from lorazoo.train.options import ModelOptions, ProjectionOptions, TrainerOptions, from_node

    cfg = cached_config(["model=tiny_bert", *overrides])
    config_schema.check(cfg)
    projection = from_node(ProjectionOptions, cfg.projection, "projection")
    model = from_node(ModelOptions, cfg.model, "model")
    trainer = from_node(TrainerOptions, cfg.trainer, "trainer")
    layout = meta_layout(model, projection, 3)
    assert layout is not None
    preflight.check_adapter_size(projection, layout, model.name, trainer)
    preflight.check_batch_memory(trainer, int(cfg.task.max_length), model)


@pytest.mark.parametrize("projection", ["lora", "unilora", "tied", "prolora"])
def test_rank_beyond_the_adapted_sizes_is_refused(projection: str):
    with pytest.raises(ConfigError, match=r"^projection\.rank=33 exceeds the smallest adapted size .* valid: 1\.\.32$"):
        _preflight(f"projection={projection}", "projection.rank=33")
    _preflight(f"projection={projection}", "projection.rank=32")


def test_vera_rank_is_bounded_by_memory_not_width():
    _preflight("projection=vera", "projection.rank=64")  # VeRA's shared basis may exceed the width (paper: 1024 > 768)
    with pytest.raises(ConfigError, match=r"^projection\.rank=100000000 makes D=.* more than the .* valid: a rank"):
        _preflight("projection=vera", "projection.rank=100000000")


@pytest.mark.parametrize("key", ["trainer.batch_size", "trainer.eval_batch_size"])
def test_batch_beyond_memory_is_refused(key: str):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=2000000000 needs at least .* GiB of activations"):
        _preflight(f"{key}=2000000000")


# ----------------------------------------------------------------------------- the command line, for real
BASE = ["model=tiny_bert", "logger=none", "trainer.progress_bar=false"]
CLI_CASES: dict[str, tuple[list[str], str]] = {
    "max_steps abc": (["trainer.max_steps=abc"], r"^error: trainer\.max_steps='abc' is invalid; valid: an integer"),
    "num_epochs 0": (["trainer.num_epochs=0"], r"^error: trainer\.num_epochs=0 is invalid; valid: .*> 0"),
    "rank 1e8": (["projection.rank=100000000"], r"^error: projection\.rank=100000000 exceeds the smallest"),
    "unset env": (
        ["model.pretrained=${oc.env:LORAZOO_NO_SUCH_VAR}"],
        r"^error: model\.pretrained='\$\{oc\.env:LORAZOO_NO_SUCH_VAR\}' cannot be resolved \(Environment variable",
    ),
    "task typo": (
        ["task=glue/nope"],
        r"^error: task=glue/nope is not an option of group task; .*valid: glue/cola, .*math/gsm8k, .*tweets$",
    ),
    "experiment typo": (
        ["experiment=lora_gleu"],
        r"^error: experiment=lora_gleu is not an option of group experiment; did you mean experiment=lora_glue\?",
    ),
    "run dir under a file": (["hydra.run.dir={tmp}/a_file/run"], r"^error: NotADirectoryError: .*a_file/run"),
    "dims make no model": (["+model.dims.hidden_size=0"], r"^error: model\.dims=\{'hidden_size': 0\} does not make a"),
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("config_keys_cli")
    (tmp / "a_file").write_text("")
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("LORAZOO_DEBUG", None)
    results = {}
    for case, (overrides, _) in CLI_CASES.items():
        args = [o.replace("{tmp}", str(tmp)) for o in overrides]
        if not any(a.startswith("hydra.run.dir=") for a in args):
            args.append(f"hydra.run.dir={tmp / case.replace(' ', '_')}")
        results[case] = run_cli([*BASE, *args], env, tmp)
    debug = {**env, "LORAZOO_DEBUG": "1"}
    results["debug"] = run_cli([*BASE, "trainer.max_steps=abc", f"hydra.run.dir={tmp / 'debug'}"], debug, tmp)
    return results


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_case_is_one_error_line(cli_results: dict, case: str):
    out = cli_results[case]
    assert out.returncode == 2, f"{case}: exit {out.returncode}\n{out.stderr[-2000:]}"
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]], f"{case}: expected one final error line\n{out.stderr[-2000:]}"
    assert re.search(CLI_CASES[case][1], lines[-1]), f"{case}: {lines[-1]!r}"


def test_lorazoo_debug_shows_the_full_traceback(cli_results: dict):
    out = cli_results["debug"]
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "ConfigError: trainer.max_steps='abc' is invalid" in out.stderr


def test_a_refused_config_leaves_a_failed_record_in_its_run_dir(cli_results: dict, tmp_path_factory):
    out = cli_results["num_epochs 0"]
    run_dir = Path(re.search(r"hydra\.run\.dir=(\S+)", " ".join(out.args)).group(1))  # type: ignore[union-attr]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("ConfigError: trainer.num_epochs=0")


# ----------------------------------------------------------------------------- one line for OSError, too
def _enospc(*_args: Any, **_kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device", "/full/disk/metrics.json")


def _main(tmp: Path, monkeypatch: pytest.MonkeyPatch, debug: str) -> None:
    import lorazoo.train
    from lorazoo.cli import main

    monkeypatch.setattr(lorazoo.train, "run", _enospc)
    monkeypatch.setenv("LORAZOO_DEBUG", debug)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # restored afterwards (LORAZOO_DEBUG=1 sets it for Hydra)
    monkeypatch.setattr("sys.argv", ["run.py", *BASE, f"hydra.run.dir={tmp / 'run'}"])
    main()


def test_os_error_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as stopped:
        _main(tmp_path, monkeypatch, debug="0")
    assert stopped.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [
        "error: OSError: [Errno 28] No space left on device: '/full/disk/metrics.json'; free space or fix "
        "permissions there, or pick another hydra.run.dir"
    ]


def test_lorazoo_debug_raises_the_os_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(OSError, match="No space left on device"):
        _main(tmp_path, monkeypatch, debug="1")


def test_os_error_before_training_leaves_a_failed_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from lorazoo.train import run, runner

    monkeypatch.setattr(runner.provenance, "write_config_used", _enospc)
    with pytest.raises(OSError):
        run(cached_config(BASE), output_dir=tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and record["failed_stage"] == "setup"
    assert record["error"] == "OSError: [Errno 28] No space left on device: '/full/disk/metrics.json'"


# ----------------------------------------------------------------------------- no secret on disk
TINY_RUN = [
    *BASE,
    "trainer.max_steps=2",
    "trainer.logging_steps=1",
    "task.max_train_samples=16",
    "task.max_eval_samples=16",
]


def _files_holding(root: Path, token: str) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]


def test_environment_values_never_reach_a_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``name='${oc.env:WANDB_API_KEY}'``: metrics.json, lorazoo_run.json, config files and W&B's offline files
    hold the interpolation, never the value; a changed value is still another run (the fingerprint sees it)."""
    from lorazoo.train import run
    from lorazoo.train.errors import RunDirError

    token = "tok_" + secrets.token_hex(8)
    monkeypatch.setenv("LORAZOO_TEST_SECRET", token)
    monkeypatch.setenv("WANDB_MODE", "offline")
    secret = ["name=${oc.env:LORAZOO_TEST_SECRET}", "model.name=m-${oc.env:LORAZOO_TEST_SECRET}", "logger=wandb"]
    run(cached_config([*TINY_RUN, *secret]), output_dir=tmp_path)
    assert list((tmp_path / "wandb").iterdir()), "W&B wrote nothing: the check below would be empty"
    assert _files_holding(tmp_path, token) == []
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "completed" and record["model"] == "m-${oc.env:LORAZOO_TEST_SECRET}"
    identity = json.loads((tmp_path / "lorazoo_run.json").read_text())["identity"]
    assert identity["model.name"] == "m-${oc.env:LORAZOO_TEST_SECRET}"

    monkeypatch.setenv("LORAZOO_TEST_SECRET", token + "_changed")
    with pytest.raises(RunDirError, match=r"first differing key a value read from the environment"):
        run(cached_config([*TINY_RUN, *secret]), output_dir=tmp_path)


def test_environment_value_in_an_error_is_not_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from lorazoo.train import run
    from lorazoo.train.errors import DataUnavailableError

    token = "tok_" + secrets.token_hex(8)
    monkeypatch.setenv("LORAZOO_TEST_SECRET", f"/nowhere/{token}.csv")
    with pytest.raises(DataUnavailableError, match=token):  # the user's terminal sees the path
        run(cached_config([*TINY_RUN, "task.data_file=${oc.env:LORAZOO_TEST_SECRET}"]), output_dir=tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "${oc.env:LORAZOO_TEST_SECRET}" in record["error"]
    assert _files_holding(tmp_path, token) == []


def _file_size_limit() -> None:
    """A full disk for this child: writes beyond 12 kB fail (EFBIG) instead of killing it (SIGXFSZ ignored);
    the run's records (< 6 kB each) fit, a checkpoint's rng_state.pth (14 kB) does not."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))


def test_full_disk_while_training_is_one_line_and_a_failed_record(tmp_path: Path):
    """torch.save reports a failed write as a RuntimeError of its stream writer: it reaches the user as one
    line naming the checkpoint folder, and metrics.json says failed (before: 50+ lines of traceback)."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for name in ("HYDRA_FULL_ERROR", "LORAZOO_DEBUG"):
        env.pop(name, None)
    argv = [*TINY_RUN, "trainer.save_steps=1", f"hydra.run.dir={run_dir}"]
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[3] / "run.py"), *argv],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_file_size_limit,
    )
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert re.match(r"^error: writing '.*checkpoint-1' failed \(.*MiB free there\); free space", lines[-1]), lines[-1]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["reason"] == "WriteFailedError"


def test_sweep_folder_named_by_an_environment_variable_holds_its_text(monkeypatch: pytest.MonkeyPatch):
    """``python run.py -m name='${oc.env:WANDB_API_KEY}'``: the sweep folder (a directory name, on disk) is
    named by the interpolation, never the value; a plain name still names it."""
    from lorazoo.train.records.naming import register_resolvers

    register_resolvers()
    token = "tok_" + secrets.token_hex(8)
    monkeypatch.setenv("LORAZOO_TEST_SECRET", token)
    hydra_like = {"dir": "multirun/${lorazoo_sweep_folder:${name},stamp}"}
    secret = OmegaConf.create({"name": "${oc.env:LORAZOO_TEST_SECRET}", **hydra_like})
    assert secret.dir == "multirun/oc.env:LORAZOO_TEST_SECRET" and token not in secret.dir
    assert OmegaConf.create({"name": "my-sweep", **hydra_like}).dir == "multirun/my-sweep"
    assert OmegaConf.create({"name": None, **hydra_like}).dir == "multirun/stamp"


GROUPS = ["task", "model", "projection", "experiment", "logger", "eval", "optimizer", "trainer"]
GROUPS += ["hydra/launcher", "hydra/sweeper"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_is_accepted_and_a_typo_lists_them_all(group: str):
    """The category behind ``experiment=lora_gleu`` and ``task=glue/nope``: in every group, optional or not,
    each real option passes and a misspelled one is one line listing every option (sub-folders included)."""
    from lorazoo.cli_hints import check_group_choices

    valid = group_options(group)
    assert valid, f"group {group} has no options"
    assert check_group_choices([f"{group}={','.join(valid)}"], CONFIG_DIR) is None  # a sweep over all of them
    message = check_group_choices([f"{group}={valid[0]}", f"{group}={valid[-1]}x"], CONFIG_DIR)
    assert message is not None and "\n" not in message
    assert message.startswith(f"error: {group}={valid[-1]}x is not an option of group {group}; ")
    assert message.endswith("valid: " + ", ".join(valid))


DIMS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings"]


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
@pytest.mark.parametrize("dim", DIMS)
def test_model_dims_that_make_no_model_or_too_big_a_one_are_one_line(model: str, dim: str):
    """``model.dims`` feeds a transformers config: a wrong type, 0, -1 or 10¹² is a working model or one line
    naming model.dims, before any weight is allocated (before: StrictDataclass/ZeroDivision tracebacks, or a
    40 GB allocation)."""
    from lorazoo.train.config import preflight
    from lorazoo.train.options import ModelOptions, TrainerOptions, from_node

    cfg = cached_config([f"model={model}"])
    trainer = from_node(TrainerOptions, cfg.trainer, "trainer")
    refused = []
    for value in ("abc", 0, -1, HUGE):
        with open_dict(cfg):
            cfg.model.dims = {dim: value}
        try:
            preflight.check_base_model(from_node(ModelOptions, cfg.model, "model"), trainer)
        except ConfigError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(("model.dims=", f"model '{model}'")), str(exc)
            refused.append(value)
    assert "abc" in refused
    if dim != "max_position_embeddings" or model == "tiny_bert":  # Llama's rotary positions cost no memory
        assert HUGE in refused


@pytest.mark.parametrize("flag", ["--config-dir={tmp}", "-cd={tmp}", "hydra.searchpath=[file://{tmp}]"])
def test_options_from_an_added_config_dir_are_not_refused(tmp_path: Path, flag: str):
    """``--config-dir mine experiment=my_study``: an option this check cannot see is left to Hydra."""
    from lorazoo.cli_hints import check_group_choices

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "my_study.yaml").write_text("# @package _global_\nname: my_study\n")
    assert check_group_choices([flag.format(tmp=tmp_path), "experiment=my_study"], CONFIG_DIR) is None
    assert check_group_choices(["experiment=my_study"], CONFIG_DIR) is not None


def test_a_number_read_from_the_environment_says_how_to_pass_it(monkeypatch: pytest.MonkeyPatch):
    """``${oc.env:...}`` always gives text: ``trainer.max_steps=${oc.env:STEPS}`` is refused naming the key and
    the way to pass a number; ``${oc.decode:...}`` of it is accepted."""
    monkeypatch.setenv("LORAZOO_TEST_STEPS", "3")
    cfg = cached_config(["model=tiny_bert", "trainer.max_steps=${oc.env:LORAZOO_TEST_STEPS}"])
    with pytest.raises(ConfigError, match=r"^trainer\.max_steps='3' is invalid; .*\$\{oc\.decode:\$\{oc\.env:VAR\}\}"):
        config_schema.check(cfg)
    cfg = cached_config(["model=tiny_bert", "trainer.max_steps='${oc.decode:${oc.env:LORAZOO_TEST_STEPS}}'"])
    assert config_schema.check(cfg)["trainer"]["max_steps"] == 3


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_shipped_experiment_passes_the_schema(experiment: str):
    """The papers' settings are valid by the schema, with each task's overrides applied (a bound too tight for
    a paper's value would refuse the paper's own setting)."""
    from lorazoo.train.stages.setup import apply_task_overrides

    cfg = cached_config([f"experiment={experiment}"])
    config_schema.check(cfg)
    tasks = sorted((OmegaConf.to_container(cfg, resolve=False) or {}).get("task_overrides") or {})  # type: ignore[union-attr]
    for task in tasks:
        with open_dict(cfg):
            cfg.task.name = task
        config_schema.check(apply_task_overrides(cfg, [])[0])
