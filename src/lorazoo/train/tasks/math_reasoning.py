"""Math reasoning: fine-tune a causal LM on worked solutions, score greedy generations with math-verify.

Training data (``task.source``):
  gsm8k       GSM8K train (Cobbe et al. 2021): ``task.data_dir``/train.jsonl or the hub (openai/gsm8k)
  metamathqa  MetaMathQA (Yu et al. 2024): ``task.train_file`` or the hub (meta-math/MetaMathQA);
              ``task.max_train_samples`` takes a fixed subset (the papers train on subsets)
  math_train  MATH train (Hendrycks et al. 2021): ``task.train_file`` or the hub (EleutherAI/hendrycks_math)
  math_rest   the MATH problems of the evaluation data that are *not* evaluated (``task.max_eval_samples``
              picks the evaluated ones) — PRM800K likewise trained on the MATH test problems outside MATH-500
Evaluation (``task.eval``): gsm8k (GSM8K test: ``task.data_dir``/test.jsonl or the hub), math (MATH / MATH-500:
``task.data_file`` in the MATH-500 jsonl layout, or the hub HuggingFaceH4/MATH-500), or both.

Every prompt is ``Question: ...\\nAnswer:`` and every target the worked solution, so a model trained on one
source is scored on either set. References: GSM8K's text after '####' (read strictly), MATH's ``answer``
(else the last \\boxed{} of its solution). Predictions: the last \\boxed{} of the generation, else the text
after '####', else its last expression; math-verify decides equivalence (math_answers.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorazoo.files import atomic_write
from lorazoo.train.errors import ConfigError, DataFormatError
from lorazoo.train.options import check_choice
from lorazoo.train.tasks.base import (
    TaskOptions,
    load_hub_split,
    located_records,
    numbered_jsonl,
    register_task,
    require_file,
    require_keys,
    subsample,
)
from lorazoo.train.tasks.causal import CausalLMTask, generate
from lorazoo.train.tasks.math_answers import (
    extract_prediction,
    gsm8k_reference,
    is_equivalent,
    last_boxed,
    parse_answer,
    shown,
)

PROMPTS = {
    "plain": ("Question: {question}\nAnswer:", "", " "),
    # MetaMath's Alpaca template, as the Uni-LoRA math scripts train and score with it
    # (KaiyangLi1992/Uni-LoRA@e622e78:math_instruction_tuning/intruction_tuning_unilora.py PROMPT, target = output;
    # instruction_tuning_eval/MATH_eval.py and gsm8k_eval.py add " Let's think step by step." when scoring)
    "alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\n{question}\n\n### Response:",
        " Let's think step by step.",
        "",
    ),
}
SOURCES = ("gsm8k", "metamathqa", "math_train", "math_rest")
EVAL_SETS = {"gsm8k": ("gsm8k",), "math": ("math",), "both": ("gsm8k", "math")}
# The seven MATH subjects, as the hub configs of EleutherAI/hendrycks_math name them.
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


@dataclass
class MathOptions(TaskOptions):
    max_length: int = 512
    source: str = "gsm8k"  # training data, one of SOURCES
    eval: str = "gsm8k"  # gsm8k | math | both
    data_file: str | None = None  # MATH evaluation jsonl (MATH-500 layout); null = hub math_hub_id
    train_file: str | None = None  # training records of task.source (metamathqa / math_train); null = hub
    hub_id: str = "openai/gsm8k"
    metamath_hub_id: str = "meta-math/MetaMathQA"
    math_hub_id: str = "HuggingFaceH4/MATH-500"
    math_hub_subsets: list[str] | None = None  # hub configs to join (EleutherAI/hendrycks_math: the 7 subjects)
    math_train_hub_id: str = "EleutherAI/hendrycks_math"
    max_new_tokens: int = 256
    save_predictions: bool = True  # predictions.jsonl in the run dir
    prompt: str = "plain"  # plain (Question/Answer) | alpaca (MetaMath's template, the Uni-LoRA scripts')


@dataclass
class Problem:
    """One math problem: its question, the worked solution (training target) and the final answer."""

    question: str
    solution: str
    reference: str
    where: str
    subject: str | None = None
    level: str | None = None


def _level(value: Any) -> str | None:
    """MATH levels as '1'..'5' (MATH-500 stores 3, the original MATH 'Level 3')."""
    if value is None:
        return None
    return str(value).removeprefix("Level").strip() or None


# optional fields and their types; a required field is always a string (require_keys)
MATH_OPTIONAL: dict[str, tuple[type, ...]] = {
    "solution": (str,),
    "answer": (str, int, float),
    "subject": (str,),
    "type": (str,),
    "level": (str, int),
}


def _hub_rows(
    hub_id: str, subset: str | None, split: str, hint: str, fields: tuple[str, ...]
) -> list[tuple[str, dict]]:
    rows = []
    for i, row in enumerate(load_hub_split(hub_id, subset, split, hint), 1):
        where = f"{hub_id}{'/' + subset if subset else ''} {split} record {i}"
        require_keys(row, fields, where, MATH_OPTIONAL if "problem" in fields else None)
        rows.append((where, dict(row)))
    return rows


def gsm8k_problem(row: dict, where: str) -> Problem:
    answer = row["answer"].strip()
    return Problem(row["question"].strip(), answer, gsm8k_reference(answer, where), where)


def math_problem(row: dict, where: str) -> Problem:
    """A MATH record: ``problem`` with ``answer`` (MATH-500) or only ``solution`` (the original MATH layout)."""
    solution = (row.get("solution") or "").strip()
    reference = row.get("answer")
    if reference is None or not str(reference).strip():
        reference = last_boxed(solution)
    if reference is None or not str(reference).strip():
        raise DataFormatError(f"{where}: MATH record has no 'answer' and no \\boxed{{}} answer in its 'solution'")
    return Problem(
        row["problem"].strip(),
        solution,
        str(reference).strip(),
        where,
        subject=row.get("subject") or row.get("type"),
        level=_level(row.get("level")),
    )


@register_task("math/gsm8k", "math/math", "math")
class MathTask(CausalLMTask):
    Options = MathOptions

    def __init__(self, options: Any, seed: int):
        super().__init__(options, seed)
        check_choice(options.source, SOURCES, "task.source")
        check_choice(options.eval, tuple(EVAL_SETS), "task.eval")
        check_choice(options.prompt, tuple(PROMPTS), "task.prompt")
        if options.name not in ("math/gsm8k", "math/math"):
            raise ConfigError(f"unknown math task {options.name!r}; valid: ['math/gsm8k', 'math/math']")
        self.eval_sets: dict[str, list[Problem]] = {}
        self.references: dict[str, list[list[Any]]] = {}
        self.breakdowns: dict[str, Any] = {}

    # ------------------------------------------------------------------ data
    def _gsm8k(self, split: str) -> list[Problem]:
        opts = self.options
        if opts.data_dir:
            path = require_file(Path(opts.data_dir) / f"{split}.jsonl", f"task.data_dir must hold {split}.jsonl")
            rows = []
            for line, row in numbered_jsonl(path):
                require_keys(row, ("question", "answer"), f"{path}:{line}")
                rows.append((f"{path}:{line}", row))
        else:
            hint = "set task.data_dir=<dir with GSM8K train.jsonl and test.jsonl>"
            rows = _hub_rows(opts.hub_id, "main", split, hint, ("question", "answer"))
        return [gsm8k_problem(row, where) for where, row in rows]

    def _math_eval(self) -> list[Problem]:
        opts = self.options
        if opts.data_file:
            path = require_file(Path(opts.data_file), "set task.data_file=<MATH jsonl, MATH-500 layout>")
            rows = located_records(path, ("problem",), MATH_OPTIONAL)
        else:
            hint = "set task.data_file=<MATH jsonl with problem, answer, subject, level (MATH-500 layout)>"
            subsets = list(opts.math_hub_subsets or [None])
            rows = [
                row for subset in subsets for row in _hub_rows(opts.math_hub_id, subset, "test", hint, ("problem",))
            ]
        return [math_problem(row, where) for where, row in rows]

    def _train_file_or_hub(
        self, fields: tuple[str, ...], hub: list[tuple[str, str | None]], hint: str
    ) -> list[tuple[str, dict]]:
        if self.options.train_file:
            path = require_file(Path(self.options.train_file), hint)
            return located_records(path, fields, MATH_OPTIONAL if "problem" in fields else None)
        return [row for hub_id, subset in hub for row in _hub_rows(hub_id, subset, "train", hint, fields)]

    def _training(self, math_eval: list[Problem] | None) -> list[Problem]:
        opts = self.options
        if opts.source == "gsm8k":
            return self._gsm8k("train")
        if opts.source == "metamathqa":
            rows = self._train_file_or_hub(
                ("query", "response"),
                [(opts.metamath_hub_id, None)],
                "set task.train_file=<MetaMathQA json/jsonl with query, response>",
            )
            return [Problem(r["query"].strip(), r["response"].strip(), "", where) for where, r in rows]
        if opts.source == "math_train":
            rows = self._train_file_or_hub(
                ("problem", "solution"),
                [(opts.math_train_hub_id, s) for s in MATH_SUBJECTS],
                "set task.train_file=<MATH train jsonl with problem, solution>",
            )
            return [math_problem(row, where) for where, row in rows]
        assert math_eval is not None  # math_rest: the problems of the MATH eval data left out of evaluation
        evaluated = {p.where for p in self.eval_sets["math"]}
        rest = [p for p in math_eval if p.where not in evaluated]
        if not rest:
            raise ConfigError(
                f"task.source=math_rest trains on the MATH problems that are not evaluated, but all "
                f"{len(math_eval)} are: set task.max_eval_samples below {len(math_eval)}, or "
                f"task.source to one of {[s for s in SOURCES if s != 'math_rest']}"
            )
        return rest

    def load(self) -> None:
        opts = self.options
        names = EVAL_SETS[opts.eval]
        if opts.source == "math_rest" and "math" not in names:
            raise ConfigError(
                f"task.source=math_rest needs MATH evaluation data; task.eval={opts.eval!r} has none "
                f"(use task.eval=math or both)"
            )
        full: dict[str, list[Problem]] = {}
        for offset, name in enumerate(names):
            full[name] = self._gsm8k("test") if name == "gsm8k" else self._math_eval()
            self.eval_sets[name] = subsample(full[name], opts.max_eval_samples, opts.split_seed + 1 + offset)
        train = self._training(full.get("math"))
        self.train_pairs = [self.pair(p) for p in subsample(train, opts.max_train_samples, opts.split_seed)]
        self.eval_pairs = [self.pair(p) for name in names for p in self.eval_sets[name]]
        for name, problems in self.eval_sets.items():  # a reference math-verify cannot read would score 0 silently
            self.references[name] = [parse_answer(p.reference) for p in problems]
            for problem, parsed in zip(problems, self.references[name]):
                if not parsed:
                    raise DataFormatError(
                        f"{problem.where}: math-verify cannot parse the reference answer {problem.reference!r}"
                    )

    def pair(self, problem: Problem) -> tuple[str, str]:
        """(prompt, target) in the training format of ``task.prompt``."""
        template, _, separator = PROMPTS[self.options.prompt]
        return template.format(question=problem.question), separator + problem.solution

    def generation_prompt(self, problem: Problem) -> str:
        template, suffix, _ = PROMPTS[self.options.prompt]
        return template.format(question=problem.question) + suffix

    # ------------------------------------------------------------------ scoring
    def metric_keys(self) -> list[str]:
        names = EVAL_SETS[self.options.eval]
        return ["exact_match"] if len(names) == 1 else [f"{name}_exact_match" for name in names]

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "train_source": self.options.source,
            "eval_sets": {name: len(problems) for name, problems in self.eval_sets.items()},
        }

    def report(self) -> dict[str, Any]:
        return {"breakdowns": self.breakdowns} if self.breakdowns else {}

    def final_evaluate(self, trainer: Any, model: Any, tokenizer: Any, output_dir: Path) -> dict[str, float]:
        metrics: dict[str, float] = {}
        lines: list[str] = []
        single = len(self.eval_sets) == 1
        for name, problems in self.eval_sets.items():
            prompts = [self.generation_prompt(p) for p in problems]
            texts = generate(
                model,
                tokenizer,
                prompts,
                self.options.max_new_tokens,
                trainer.args.per_device_eval_batch_size,
                progress=not trainer.args.disable_tqdm,
            )
            predictions = [extract_prediction(t) for t in texts]
            correct = [is_equivalent(pred, ref) for pred, ref in zip(predictions, self.references[name])]
            metrics["exact_match" if single else f"{name}_exact_match"] = sum(correct) / max(len(correct), 1)
            if name == "math":
                self.breakdowns["math"] = {key: breakdown(problems, correct, key) for key in ("subject", "level")}
            lines += [
                json.dumps(
                    {
                        "set": name,
                        "prompt": q,
                        "generation": t,
                        "prediction": shown(pred),
                        "reference": p.reference,
                        "correct": c,
                        "subject": p.subject,
                        "level": p.level,
                    }
                )
                for p, q, t, pred, c in zip(problems, prompts, texts, predictions, correct)
            ]
        if self.options.save_predictions:

            def write_lines(tmp: str) -> None:
                Path(tmp).write_text("\n".join(lines) + "\n")

            atomic_write(output_dir / "predictions.jsonl", write_lines)
        return metrics


def breakdown(problems: list[Problem], correct: list[bool], key: str) -> dict[str, dict[str, float]]:
    """exact_match and count per value of ``key`` (subject or level), sorted by that value."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for problem, ok in zip(problems, correct):
        groups[str(getattr(problem, key))].append(ok)
    return {value: {"exact_match": sum(oks) / len(oks), "n": len(oks)} for value, oks in sorted(groups.items())}
