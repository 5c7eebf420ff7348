"""The Task interface, the task registry and the data helpers every task shares."""

from __future__ import annotations

import codecs
import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lorazoo import jsonsafe
from lorazoo.train.errors import ConfigError, DataFormatError, DataUnavailableError
from lorazoo.train.loading.hub import hub_unreachable_reason
from lorazoo.train.options import from_node

_TASKS: dict[str, type[Task]] = {}


def register_task(*names: str) -> Callable[[type[Task]], type[Task]]:
    """Register a Task class under exact names (``math/gsm8k``) or a family prefix (``glue``)."""

    def wrap(cls: type[Task]) -> type[Task]:
        for name in names:
            _TASKS[name] = cls
        return cls

    return wrap


def task_names() -> list[str]:
    return sorted(_TASKS)


def task_class(name: str) -> type[Task]:
    """The Task class of a task name: looked up by the full name, then by its family (before '/')."""
    cls = _TASKS.get(name) or _TASKS.get(name.split("/", 1)[0])
    if cls is None:
        raise ConfigError(f"unknown task {name!r}; registered tasks/families: {task_names()}")
    return cls


def build_task(node: Any, seed: int) -> Task:
    """The Task for a ``task`` config node (its class by ``task_class``)."""
    name = str(node.get("name", "")) if hasattr(node, "get") else ""
    cls = task_class(name)
    return cls(from_node(cls.Options, node, f"task {name!r}"), seed)


@dataclass
class TaskOptions:
    """Keys every task config has."""

    name: str
    data_dir: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None  # every task: a random N chosen by split_seed, kept in file order (subsample)
    max_length: int = 128
    split_seed: int = 0  # fixed data subsets/splits, independent of the training seed
    holdout_dev: int | None = None  # evaluate on N examples carved from train (lr search), not on the dev set


class Task:
    """One fine-tuning task: reads its data, tokenizes it, scores predictions.

    ``task_type`` is ``seq_cls`` (the model gets ``num_labels``; 1 = regression) or ``causal_lm``.
    ``load()`` reads raw data before the model is loaded, so a data error costs seconds, not a model load.
    """

    Options: ClassVar[type] = TaskOptions
    task_type: ClassVar[str] = "seq_cls"
    prediction_loss_only: ClassVar[bool] = False
    supports_holdout: ClassVar[bool] = False  # True where load() honours task.holdout_dev
    greater_is_better: ClassVar[bool] = True  # the direction of the main metric (first of metric_keys)

    def __init__(self, options: Any, seed: int):
        self.options = options
        self.seed = seed
        for key in ("max_train_samples", "max_eval_samples"):
            value = getattr(options, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ConfigError(f"task.{key} must be a positive integer or null, got {value!r}")
        holdout = getattr(options, "holdout_dev", None)
        if holdout is not None:
            if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout <= 0:
                raise ConfigError(f"task.holdout_dev must be a positive integer or null, got {holdout!r}")
            if not self.supports_holdout:
                raise ConfigError(
                    f"task.holdout_dev is not supported by task {options.name!r}; "
                    "it is available for the classification tasks (glue/*, tweets)"
                )

    @property
    def name(self) -> str:
        return self.options.name

    @property
    def num_labels(self) -> int:
        return 0

    def load(self) -> None:
        raise NotImplementedError

    def datasets(self, tokenizer: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def collator(self, tokenizer: Any) -> Callable:
        raise NotImplementedError

    def compute_metrics(self, eval_pred: Any) -> dict[str, float]:
        return {}

    def metric_keys(self) -> list[str]:
        """The task's headline metric names (copied to the top level of metrics.json)."""
        return []

    def metric_meaning(self) -> dict[str, Any]:
        """The main metric (first of ``metric_keys``) and whether larger is better, declared here once: the
        runner writes it into metrics.json, where the sweep objective, the summary and compare read it. A task
        reporting no score of its own is ranked by its evaluation loss, lower first."""
        keys = self.metric_keys()
        if not keys:
            return {"main_metric": "loss", "greater_is_better": False}
        return {"main_metric": keys[0], "greater_is_better": self.greater_is_better}

    def summary(self) -> dict[str, Any]:
        """Extra facts for metrics.json (data sizes, majority_rate, ...)."""
        return {}

    def eval_selection(self) -> str:
        """How the scored examples were picked: one rule for every task (``subsample``), stated in metrics.json."""
        n = self.options.max_eval_samples
        if n is None:
            return "every example of the evaluation set"
        return (
            f"a random {n} of the evaluation set (task.max_eval_samples), chosen by task.split_seed="
            f"{self.options.split_seed} (not the training seed) and kept in file order"
        )

    def report(self) -> dict[str, Any]:
        """Structured results for metrics.json beside the flat metrics (e.g. per-subject breakdowns); after
        ``final_evaluate``."""
        return {}

    def derived_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics computed from Trainer.evaluate's (e.g. perplexity from loss); default none."""
        return {}

    def final_evaluate(self, trainer: Any, model: Any, tokenizer: Any, output_dir: Path) -> dict[str, float]:
        """Metrics beyond Trainer.evaluate (generation-based scores); default none."""
        return {}


# ----------------------------------------------------------------------------- data helpers
def subsample(items: list, n: int | None, seed: int) -> list:
    """A fixed random subset of ``n`` items (order kept), or all of them."""
    if n is None or n >= len(items):
        return items
    keep = np.sort(np.random.Generator(np.random.PCG64(seed)).permutation(len(items))[:n])
    return [items[i] for i in keep]


def split_train_dev(items: list, dev_fraction: float, seed: int) -> tuple[list, list]:
    """A deterministic shuffled split (the same on every machine for a given seed)."""
    if not 0.0 < dev_fraction < 1.0:
        raise ConfigError(f"task.dev_fraction must be in (0, 1), got {dev_fraction!r}")
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(items))
    n_dev = max(1, round(len(items) * dev_fraction))
    return [items[i] for i in order[n_dev:]], [items[i] for i in order[:n_dev]]


def carve_holdout(train: list, n: int, seed: int) -> tuple[list, list]:
    """(rest of train, n held-in dev examples): a seeded split of the training data, so an lr search never
    sees the dev set its final numbers are reported on."""
    if n >= len(train):
        raise ConfigError(f"task.holdout_dev={n} leaves no training data (train has {len(train)} examples)")
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(train))
    held = set(order[:n].tolist())
    return [r for i, r in enumerate(train) if i not in held], [train[i] for i in sorted(held)]


_RECORDERS: list[list[Path]] = []  # open recording_reads() lists


@contextlib.contextmanager
def recording_reads() -> Iterator[list[Path]]:
    """The paths require_file hands out while this is open: the data files a task read (the runner puts their
    sha256 into metrics.json)."""
    found: list[Path] = []
    _RECORDERS.append(found)
    try:
        yield found
    finally:
        _RECORDERS.remove(found)


def require_file(path: Path, hint: str) -> Path:
    """A regular, non-empty file; a broken symlink or a device (a link to /dev/zero) is named as such."""
    for found in _RECORDERS:
        found.append(path)
    if not path.exists():
        if path.is_symlink():
            raise DataUnavailableError(
                f"data file {str(path)!r} is a broken symlink to {os.readlink(path)!r}; valid: a regular file; {hint}"
            )
        raise DataUnavailableError(f"data file {str(path)!r} not found; {hint}")
    if not path.is_file():
        target = f" (it resolves to {str(path.resolve())!r})" if path.is_symlink() else ""
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise DataFormatError(f"data file {str(path)!r} is {kind}{target}; valid: a regular file; {hint}")
    if path.stat().st_size == 0:
        raise DataFormatError(f"data file {str(path)!r} is empty")
    return path


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def read_text(path: Path) -> str:
    """A data file's text: UTF-8 (a byte-order mark, UTF-8/16/32, is honoured and removed); a byte that is not
    valid UTF-8 raises DataFormatError naming the file and line. Line endings are left as they are."""
    raw = path.read_bytes()
    encoding = next((name for bom, name in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}:{line}: byte {raw[exc.start : exc.start + 1]!r} is not valid {encoding}; "
            "valid: a UTF-8 text file (re-save it as UTF-8)"
        ) from None


def lines_of(path: Path) -> list[str]:
    """The file's lines split on '\n' only (a stray '\r' or U+2028 inside a field is text, not a line break)."""
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_jsonl(path: Path) -> list[dict]:
    """JSON lines; a bad line raises DataFormatError naming file and line."""
    return [row for _, row in numbered_jsonl(path)]


def require_keys(
    row: Mapping[str, Any], keys: tuple[str, ...], where: str, optional: Mapping[str, tuple[type, ...]] | None = None
) -> None:
    """Every field in ``keys`` present and a string (the text a task reads); each ``optional`` field absent, null
    or of its listed types. A wrong type is named with ``where`` (file:line) instead of failing later in ``.strip()``."""
    missing = [k for k in keys if k not in row]
    if missing:
        raise DataFormatError(f"{where}: missing field(s) {missing}; expected {list(keys)}")
    for key in keys:
        if not isinstance(row[key], str):
            raise DataFormatError(f"{where}: field {key!r} must be a string, got {json_kind(row[key])}")
    for key, kinds in (optional or {}).items():
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            valid = " or ".join(["null", *(_KIND_NAMES[k] for k in kinds)])
            raise DataFormatError(f"{where}: field {key!r} must be {valid}, got {json_kind(value)}")


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number"}


def json_kind(value: Any) -> str:
    """How a JSON value reads in a message: null, true, the number 5, a list, an object, the string '...'."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else type(value).__name__


def load_hub_split(hub_id: str, subset: str | None, split: str, local_hint: str) -> Any:
    """A split from the hub, or a fast DataUnavailableError telling how to use local files instead."""
    reason = hub_unreachable_reason()
    if reason:
        raise DataUnavailableError(f"cannot download {hub_id}{'/' + subset if subset else ''} ({reason}); {local_hint}")
    import datasets

    try:
        return datasets.load_dataset(hub_id, subset, split=split)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataUnavailableError(f"cannot load {hub_id} split {split!r}: {first}; {local_hint}") from exc


def numbered_jsonl(path: Path) -> list[tuple[int, dict]]:
    """JSON lines with their 1-based line numbers (blank lines skipped), so later checks can name the line;
    a bad line raises DataFormatError naming file and line."""
    rows = []
    for lineno, line in enumerate(lines_of(path), 1):
        if not line.strip():
            continue
        row = jsonsafe.loads(line, f"{path}:{lineno}", DataFormatError)
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append((lineno, row))
    if not rows:
        raise DataFormatError(f"data file {str(path)!r} holds no records")
    return rows


def located_records(
    path: Path, fields: tuple[str, ...], optional: Mapping[str, tuple[type, ...]] | None = None
) -> list[tuple[str, dict]]:
    """Records of a JSON list or JSON lines file, each with where it is (``file:line`` or ``file: record i``);
    every record must be an object holding ``fields`` as strings (``optional``: see require_keys)."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        records = jsonsafe.loads(text, str(path), DataFormatError)
        if not isinstance(records, list):
            raise DataFormatError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
        located = [(f"{path}: record {i}", r) for i, r in enumerate(records, 1)]
    else:
        located = [(f"{path}:{line}", r) for line, r in numbered_jsonl(path)]
    if not located:
        raise DataFormatError(f"data file {str(path)!r} holds no records")
    for where, record in located:
        if not isinstance(record, dict):
            raise DataFormatError(f"{where} is not an object")
        require_keys(record, fields, where, optional)
    return located
