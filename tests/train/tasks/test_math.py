"""Math answers and tasks: \\boxed{} extraction, math-verify equivalence, strict GSM8K references, MATH-500 data,
training sources × evaluation sets, and the MATH run end to end on a tiny model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import SHARED_DATA, train_tiny
from omegaconf import OmegaConf

from lorazoo.train.errors import ConfigError, DataFormatError
from lorazoo.train.tasks import build_task
from lorazoo.train.tasks.math_answers import (
    answer_span,
    extract_prediction,
    gsm8k_reference,
    is_equivalent,
    last_boxed,
    parse_answer,
)

MATH500 = SHARED_DATA / "math" / "math500_test.jsonl"
GSM8K = SHARED_DATA / "gsm8k"
needs_math500 = pytest.mark.skipif(not MATH500.is_file(), reason=f"{MATH500} absent")
needs_gsm8k = pytest.mark.skipif(not (GSM8K / "test.jsonl").is_file(), reason=f"{GSM8K} absent")


def same(prediction: str, reference: str) -> bool:
    return is_equivalent(extract_prediction(prediction), parse_answer(reference))


@pytest.mark.parametrize(
    "text,expected",
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{1} then \boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),  # the last one, nested braces
        (r"\boxed{\left\{ x \mid x^{2} > 1 \right\}}", r"\left\{ x \mid x^{2} > 1 \right\}"),
        (r"\fbox{7}", "7"),
        (r"the answer is \boxed 5.", "5."),
        ("no box here", None),
        (r"\boxed{unclosed", None),
    ],
)
def test_last_boxed_matches_nested_braces(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "prediction,reference",
    [
        (r"$\frac{1}{2}$", "0.5"),
        (r"\boxed{10}", "10"),
        ("1,000", "1000"),
        ("The total is $1,000.", "1000"),
        (r"We get \boxed{\frac{\sqrt3}{2}}.", r"\frac{\sqrt{3}}{2}"),
        ("3 + 4 = 7\n#### 7", "7"),
        (r"\boxed{(3, \frac{\pi}{2})}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\boxed{\$18.90}", "18.90"),
        ("There are 5 apples, then 3 more: 8 apples.", "8"),
        ("x = 1/2.\nThe answer is: \\frac{1}{2}", "0.5"),
        (r"\boxed{\dfrac{14}{3}}", r"\frac{14}{3}"),
    ],
)
def test_math_verify_equivalences(prediction, reference):
    assert same(prediction, reference)


@pytest.mark.parametrize(
    "prediction,reference",
    [
        (r"\boxed{11}", "10"),
        (r"$\frac{1}{3}$", "0.33"),
        ("1,001", "1000"),
        (r"\boxed{p - q}", "q - p"),
        (r"\boxed{\frac12} is wrong, \boxed{3}", "0.5"),  # only the last \boxed{} counts
        ("no answer at all", "4"),
        ("", "0"),
        ("8 apples\n#### 9", "8"),  # '####' beats the last number
    ],
)
def test_math_verify_non_equivalences(prediction, reference):
    assert not same(prediction, reference)


def test_the_old_final_number_bug_is_gone():
    # the GSM8K regex read "\boxed{\frac12}" as 12
    for text in (r"\boxed{\frac12}", r"\boxed{\frac{1}{2}}"):
        assert same(text, "0.5") and not same(text, "12")


def test_answer_span_prefers_boxed_then_marker():
    assert answer_span(r"x #### 3 \boxed{4}") == ("4", False)
    assert answer_span("so 2x = 6.\nThe answer is: \\frac{1}{2}.\n#### 5") == ("\\frac{1}{2}", False)
    assert answer_span("x #### 3") == ("3", False) and answer_span("x is 3") == ("x is 3", True)


@pytest.mark.parametrize("answer", ["3 + 4 = 7", "3 + 4 = 7\n####", "####   "])
def test_gsm8k_reference_without_final_answer_is_an_error(answer):
    with pytest.raises(DataFormatError, match="data.jsonl:5"):
        gsm8k_reference(answer, "data.jsonl:5")


def test_gsm8k_reference_is_the_text_after_the_marker():
    assert gsm8k_reference("2 + 2 = <<2+2=4>>4\n#### 1,004", "x") == "1,004"


def _task(**kw):
    return build_task(OmegaConf.create(kw), seed=0)


def _write_jsonl(path: Path, rows: list[dict], blank_first: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\n" if blank_first else "") + "".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_missing_marker_names_file_and_line(tmp_path: Path):
    rows = [{"question": "1+1?", "answer": "2\n#### 2"}, {"question": "2+2?", "answer": "it is 4"}]
    _write_jsonl(tmp_path / "train.jsonl", rows[:1])
    _write_jsonl(tmp_path / "test.jsonl", rows, blank_first=True)  # the bad record sits on line 3
    task = _task(name="math/gsm8k", data_dir=str(tmp_path))
    with pytest.raises(DataFormatError, match=r"test\.jsonl:3: GSM8K answer has no '#### <final answer>'"):
        task.load()


def test_gsm8k_train_records_are_read_strictly_too(tmp_path: Path):
    _write_jsonl(tmp_path / "train.jsonl", [{"question": "1+1?", "answer": "2"}])
    _write_jsonl(tmp_path / "test.jsonl", [{"question": "1+1?", "answer": "2\n#### 2"}])
    with pytest.raises(DataFormatError, match=r"train\.jsonl:1"):
        _task(name="math/gsm8k", data_dir=str(tmp_path)).load()


@needs_gsm8k
def test_real_gsm8k_references_score_their_own_solutions():
    task = _task(name="math/gsm8k", data_dir=str(GSM8K), max_eval_samples=60, max_train_samples=10)
    task.load()
    problems = task.eval_sets["gsm8k"]
    assert len(problems) == 60 and len(task.train_pairs) == 10
    assert all(is_equivalent(extract_prediction(p.solution), ref) for p, ref in zip(problems, task.references["gsm8k"]))


@needs_math500
def test_real_math500_solutions_match_their_answers_and_shifted_ones_do_not():
    task = _task(name="math/math", data_file=str(MATH500), source="math_rest", eval="math", max_eval_samples=80)
    task.load()
    problems, refs = task.eval_sets["math"], task.references["math"]
    assert len(problems) == 80 and len(task.train_pairs) == 420  # math_rest: the 420 problems not evaluated
    evaluated = {task.pair(p)[0] for p in problems}
    assert not evaluated & {prompt for prompt, _ in task.train_pairs}
    assert all(is_equivalent(extract_prediction(p.solution), ref) for p, ref in zip(problems, refs))
    shifted = [is_equivalent(extract_prediction(problems[i].solution), refs[i - 1]) for i in range(len(problems))]
    # a shifted pair matches only when the two references are themselves equal answers
    assert all(is_equivalent(refs[i], refs[i - 1]) for i, ok in enumerate(shifted) if ok) and sum(shifted) < 5
    assert {p.subject for p in problems} <= {
        "Algebra",
        "Counting & Probability",
        "Geometry",
        "Intermediate Algebra",
        "Number Theory",
        "Prealgebra",
        "Precalculus",
    }
    assert {p.level for p in problems} <= {"1", "2", "3", "4", "5"}


@needs_math500
def test_math_rest_with_every_problem_evaluated_is_an_error():
    with pytest.raises(ConfigError, match="task.max_eval_samples below 500"):
        _task(name="math/math", data_file=str(MATH500), source="math_rest", eval="math").load()


def test_math_original_layout_reads_the_boxed_answer_and_level(tmp_path: Path):
    rows = [
        {"problem": "1/2 as a decimal?", "solution": r"It is $\boxed{0.5}$.", "level": "Level 2", "type": "Prealgebra"},
        {"problem": "2+2?", "solution": "four"},
    ]
    path = _write_jsonl(tmp_path / "math.jsonl", rows)
    task = _task(name="math/math", data_file=str(path), source="math_rest", eval="math", max_eval_samples=1)
    with pytest.raises(DataFormatError, match=r"math\.jsonl:2: MATH record has no 'answer'"):
        task.load()
    _write_jsonl(path, rows[:1] * 2)
    task.load()
    assert task.eval_sets["math"][0].reference == "0.5" and task.eval_sets["math"][0].level == "2"
    assert task.eval_sets["math"][0].subject == "Prealgebra"


@pytest.mark.parametrize("bad", [{"source": "metamath"}, {"eval": "mathh"}])
def test_bad_source_or_eval_lists_the_valid_ones(bad):
    key, value = next(iter(bad.items()))
    with pytest.raises(ConfigError, match=f"task.{key}={value!r}.*choose one of"):
        _task(name="math/gsm8k", **bad)


def test_metamathqa_and_math_train_read_a_local_train_file(tmp_path: Path):
    gsm = tmp_path / "gsm8k"
    _write_jsonl(gsm / "test.jsonl", [{"question": "1+1?", "answer": "2\n#### 2"}])
    meta = tmp_path / "metamath.json"
    meta.write_text(json.dumps([{"query": "What is 3+3?", "response": "3+3=6. The answer is: 6"}] * 3))
    task = _task(name="math/gsm8k", data_dir=str(gsm), source="metamathqa", train_file=str(meta), max_train_samples=2)
    task.load()
    assert task.train_pairs == [("Question: What is 3+3?\nAnswer:", " 3+3=6. The answer is: 6")] * 2
    meta.write_text(json.dumps([{"query": "What is 3+3?"}]))
    with pytest.raises(DataFormatError, match=r"metamath\.json: record 1: missing field\(s\) \['response'\]"):
        task.load()
    math_train = _write_jsonl(tmp_path / "math_train.jsonl", [{"problem": "1+2?", "solution": r"$\boxed{3}$"}])
    task = _task(name="math/gsm8k", data_dir=str(gsm), source="math_train", train_file=str(math_train))
    task.load()
    assert task.train_pairs == [("Question: 1+2?\nAnswer:", r" $\boxed{3}$")]


def test_no_local_metamathqa_offline_says_which_key(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _write_jsonl(tmp_path / "test.jsonl", [{"question": "1+1?", "answer": "2\n#### 2"}])
    with pytest.raises(Exception, match="task.train_file="):
        _task(name="math/gsm8k", data_dir=str(tmp_path), source="metamathqa").load()


@needs_math500
@needs_gsm8k
def test_both_eval_sets_score_separately(tmp_path: Path):
    task = _task(
        name="math/gsm8k",
        data_dir=str(GSM8K),
        data_file=str(MATH500),
        eval="both",
        max_eval_samples=3,
        max_train_samples=4,
    )
    task.load()
    assert set(task.eval_sets) == {"gsm8k", "math"} and len(task.eval_pairs) == 6
    assert task.metric_keys() == ["gsm8k_exact_match", "math_exact_match"]


# ---------------------------------------------------------------------------------------------- end to end
@needs_math500
def test_math500_run_writes_exact_match_and_breakdowns(tmp_path: Path):
    """The MATH-500 run command (with smaller batches/generations so the suite stays fast)."""
    out = tmp_path / "run"
    record = train_tiny(
        out,
        "task=math/math",
        "model=tiny_llama",
        f"task.data_file={MATH500}",
        "task.max_eval_samples=8",
        "trainer.max_steps=2",
        "logger=none",
        "task.max_new_tokens=8",
        "task.max_length=128",
        "trainer.batch_size=4",
        "projection.kwargs.d=1024",
    )  # d fits tiny_llama (D = 4,096)
    assert record["status"] == "completed" and record["steps"] == 2
    assert 0.0 <= record["exact_match"] <= 1.0 and record["eval_sets"] == {"math": 8}
    subjects, levels = record["breakdowns"]["math"]["subject"], record["breakdowns"]["math"]["level"]
    assert sum(v["n"] for v in subjects.values()) == sum(v["n"] for v in levels.values()) == 8
    assert set(levels) <= {"1", "2", "3", "4", "5"}
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 8 and all(p["set"] == "math" for p in predictions)
    n_correct = sum(p["correct"] for p in predictions)
    assert record["exact_match"] == n_correct / 8
    for value, cell in subjects.items():
        rows = [p for p in predictions if p["subject"] == value]
        assert cell == {"exact_match": sum(p["correct"] for p in rows) / len(rows), "n": len(rows)}


@pytest.mark.slow
@needs_math500
def test_acceptance_command_runs_as_given(tmp_path: Path):
    """The exact MATH-500 command, run from the repository root (../shared/data beside it)."""
    import subprocess
    import sys

    from helpers import REPO_ROOT

    if not (REPO_ROOT / "../shared/data/math/math500_test.jsonl").is_file():
        pytest.skip("../shared/data is not beside this checkout")
    command = [
        sys.executable,
        str(REPO_ROOT / "run.py"),
        "task=math/math",
        "model=tiny_llama",
        "task.data_file=../shared/data/math/math500_test.jsonl",
        "task.max_eval_samples=8",
        "trainer.max_steps=2",
        "logger=none",
        f"hydra.run.dir={tmp_path}",
    ]
    env = {**os.environ, "LORAZOO_CONFIG_DIR": str(REPO_ROOT / "configs")}
    done = subprocess.run(command, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "completed" and "exact_match" in record and record["breakdowns"]["math"]["subject"]


def test_alpaca_prompt_is_the_uni_lora_scripts_template(tmp_path: Path):
    _write_jsonl(tmp_path / "train.jsonl", [{"question": "1+1?", "answer": "2\n#### 2"}])
    _write_jsonl(tmp_path / "test.jsonl", [{"question": "2+2?", "answer": "4\n#### 4"}])
    task = _task(name="math/gsm8k", data_dir=str(tmp_path), prompt="alpaca")
    task.load()
    prompt, target = task.train_pairs[0]
    assert prompt.endswith("### Instruction:\n1+1?\n\n### Response:") and target == "2\n#### 2"
    assert task.generation_prompt(task.eval_sets["gsm8k"][0]).endswith("### Response: Let's think step by step.")
    with pytest.raises(ConfigError, match="task.prompt='chat'"):
        _task(name="math/gsm8k", prompt="chat")
