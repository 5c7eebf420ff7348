"""EleutherAI's lm-evaluation-harness on an adapted model, in the process that trained it.

``eval.lm_eval.tasks=[...]`` names lm-eval tasks or groups (``mmlu``, ``bbh_cot_fewshot``, a task of your own
under ``eval.lm_eval.include_path``). ``prepare`` checks the names and loads every task's data *before*
training, so a typo or a data set the hub cannot give fails in seconds, not after the run; ``evaluate`` then
wraps the trained model as it is in memory (``HFLM(pretrained=<model>)``, no save/reload) and runs
``lm_eval.simple_evaluate``. lm-eval is the optional extra ``lorazoo[eval]``.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorazoo.files import atomic_write
from lorazoo.train.errors import ConfigError, DataUnavailableError
from lorazoo.train.evaluation.lm_eval_code import OPT_IN, code_in_task_yamls
from lorazoo.train.loading.hub import hub_unreachable_reason
from lorazoo.train.options import from_node

INSTALL_HINT = "pip install 'lorazoo[eval]' (lm-eval)"
LOCAL_COPY_HINT = (
    "point lm-eval at a local copy: eval.lm_eval.include_path=<dir of task yamls whose dataset_path "
    "is a local dir or json files> (README: 'lm-eval offline')"
)


@dataclass
class LmEvalOptions:
    """configs/eval/default.yaml ``lm_eval``: what to run after training (nothing when ``tasks`` is empty)."""

    tasks: list[str] | str = field(default_factory=list)  # a single name is a list of one
    num_fewshot: int | None = None  # null = each task's own default
    limit: float | None = None  # examples per task (< 1: a fraction); for quick checks only
    batch_size: int | str = 8  # or "auto"
    include_path: list[str] | str | None = None  # extra task yaml dirs (local copies of MMLU/BBH, test tasks)
    include_defaults: bool = True  # lm-eval's own ~14k tasks (indexing them takes ~1 min)
    log_samples: bool = False  # per-example inputs/outputs to <run dir>/lm_eval_samples_<task>.jsonl
    apply_chat_template: bool = False
    confirm_run_unsafe_code: bool = False  # HumanEval/MBPP execute generated code: opt in explicitly
    allow_include_path_code: bool = False  # include_path task yamls with !function import Python: opt in explicitly
    max_length: int | None = None  # context length lm-eval assumes; null = the model config's

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [self.tasks]


@dataclass
class EvalOptions:
    """The ``eval`` config group: evaluation beyond the task's own metrics."""

    lm_eval: LmEvalOptions = field(default_factory=LmEvalOptions)

    def __post_init__(self) -> None:
        if isinstance(self.lm_eval, dict):
            self.lm_eval = from_node(LmEvalOptions, self.lm_eval, "eval.lm_eval config")


def eval_options(node: Any) -> EvalOptions:
    return from_node(EvalOptions, node, "eval config")


@contextlib.contextmanager
def _offline_when_unreachable() -> Iterator[None]:
    """With the hub unreachable, make datasets/huggingface_hub fail at once instead of retrying for minutes."""
    if hub_unreachable_reason() is None:
        yield
        return
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


class Harness:
    """lm-eval tasks checked and loaded once; ``evaluate`` scores a model on them."""

    def __init__(self, options: LmEvalOptions):
        self.options = options
        try:
            from lm_eval.tasks import TaskManager
        except ImportError as exc:
            raise ConfigError(
                f"eval.lm_eval.tasks={options.tasks} needs lm-eval, which is not installed: {INSTALL_HINT}"
            ) from exc
        shots = options.num_fewshot
        if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 0):
            raise ConfigError(f"eval.lm_eval.num_fewshot={shots!r} is not valid; valid: null or an integer >= 0")
        if options.limit is not None and not (isinstance(options.limit, (int, float)) and options.limit > 0):
            raise ConfigError(
                f"eval.lm_eval.limit={options.limit!r} is not valid; valid: null, a count, or a fraction < 1"
            )
        paths = [options.include_path] if isinstance(options.include_path, str) else list(options.include_path or [])
        for path in paths:
            if not Path(path).is_dir():
                raise ConfigError(f"eval.lm_eval.include_path {path!r} is not a directory; valid: dirs of task yamls")
        code = [] if options.allow_include_path_code else code_in_task_yamls(paths)
        if code:
            more = f" and {len(code) - 1} more" if len(code) > 1 else ""
            raise ConfigError(
                f"eval.lm_eval.include_path would run Python code ({code[0]}{more}); lorazoo runs none unless asked: "
                f"set {OPT_IN} if you trust {', '.join(map(str, paths))}"
            )
        self.manager = TaskManager(include_path=paths or None, include_defaults=options.include_defaults)
        unknown = [name for name in options.tasks if not self.manager.match_tasks([name])]
        if unknown:
            near = sorted({m for name in unknown for m in difflib.get_close_matches(name, self.manager.all_tasks, 3)})
            where = "" if options.include_defaults else " (eval.lm_eval.include_defaults=false: only include_path)"
            raise ConfigError(
                f"unknown lm-eval task(s) {unknown}{where}; close matches: {near or 'none'}; "
                f"list them with `lm-eval ls tasks`"
            )

    def check_data(self) -> None:
        """Load every task's data now (the hub's, or local files) so a missing data set fails before training."""
        reason = hub_unreachable_reason()
        with _offline_when_unreachable():
            for name in self.options.tasks:
                try:
                    loaded = self.manager.load([name])
                except Exception as exc:
                    first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
                    offline = f" (the hub is unreachable: {reason})" if reason else ""
                    raise DataUnavailableError(
                        f"lm-eval task {name!r} cannot load its data{offline}: {first}; {LOCAL_COPY_HINT}"
                    ) from exc
                self._check_unsafe(name, loaded.get("tasks") or {})

    def _check_unsafe(self, name: str, tasks: dict[str, Any]) -> None:
        """Tasks that execute model-written code (HumanEval) need an explicit opt-in, asked for now, not after training."""
        unsafe = sorted(t for t, task in tasks.items() if getattr(getattr(task, "config", None), "unsafe_code", False))
        if not unsafe:
            return
        if not self.options.confirm_run_unsafe_code:
            raise ConfigError(
                f"lm-eval task {name!r} executes model-written code ({unsafe}); allow it with "
                f"eval.lm_eval.confirm_run_unsafe_code=true (ideally in a sandbox) or drop it from "
                f"eval.lm_eval.tasks"
            )
        os.environ.setdefault("HF_ALLOW_CODE_EVAL", "1")  # the code_eval metric's own opt-in, given by the user

    def evaluate(self, model: Any, tokenizer: Any, output_dir: Path | None) -> dict[str, Any]:
        """lm-eval's results for ``model`` exactly as it is in memory (the adapter attached, not merged)."""
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM

        opts = self.options
        was_training = model.training
        model.eval()
        try:
            extra = {"max_length": opts.max_length} if opts.max_length else {}
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=opts.batch_size, **extra)
            with _offline_when_unreachable():
                raw = simple_evaluate(
                    model=lm,
                    tasks=list(opts.tasks),
                    num_fewshot=opts.num_fewshot,
                    limit=opts.limit,
                    task_manager=self.manager,
                    log_samples=opts.log_samples,
                    apply_chat_template=opts.apply_chat_template,
                    confirm_run_unsafe_code=opts.confirm_run_unsafe_code,
                )
        finally:
            model.train(was_training)
        if raw is None:  # not rank 0 of a distributed evaluation
            return {}
        if opts.log_samples and output_dir is not None:
            for task, samples in (raw.get("samples") or {}).items():
                lines = "".join(json.dumps(jsonable(s)) + "\n" for s in samples)

                def write_samples(tmp: str, text: str = lines) -> None:
                    Path(tmp).write_text(text)

                atomic_write(output_dir / f"lm_eval_samples_{task}.jsonl", write_samples)
        return summarize(raw, opts)


def summarize(raw: dict[str, Any], options: LmEvalOptions) -> dict[str, Any]:
    """The part of lm-eval's output worth keeping in metrics.json (no per-example samples)."""
    keep = ("results", "groups", "group_subtasks", "n-shot", "higher_is_better", "versions", "n-samples")
    return jsonable(
        {**{k: raw[k] for k in keep if k in raw}, "settings": asdict(options), "lm_eval_version": _version()}
    )


def flat_scores(summary: dict[str, Any]) -> dict[str, float]:
    """``lm_eval/<task>/<metric>`` → value for every finite number (W&B summary keys)."""
    flat = {}
    for section in ("results", "groups"):
        for task, metrics in (summary.get(section) or {}).items():
            for metric, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    flat[f"lm_eval/{task}/{metric.replace(',none', '')}"] = float(value)
    return flat


def jsonable(value: Any) -> Any:
    """lm-eval's numbers are often numpy scalars; NaN/inf become None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def prepare(options: EvalOptions) -> Harness | None:
    """The Harness for ``eval.lm_eval`` (tasks checked, data loaded), or None when no tasks are asked for."""
    if not options.lm_eval.tasks:
        return None
    harness = Harness(options.lm_eval)
    harness.check_data()
    return harness
