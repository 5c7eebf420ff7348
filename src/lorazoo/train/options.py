"""Typed views of the Hydra config groups: unknown keys (a typo in a yaml file) are an error, not ignored.

Hydra's struct mode already rejects misspelled command-line overrides; these dataclasses also catch
keys misspelled inside config files (experiment configs, a user's own yaml).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from omegaconf import DictConfig, OmegaConf

from lorazoo.train.errors import ConfigError, ModelUnavailableError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")


def to_plain(node: Any) -> Any:
    """A resolved plain-Python copy of an OmegaConf node (dicts and lists stay dicts and lists)."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def from_node(cls: type[T], node: Any, where: str) -> T:
    """Build dataclass ``cls`` from a config node; unknown keys raise ConfigError naming the valid ones."""
    data = to_plain(node) or {}
    known = [f.name for f in dataclasses.fields(cast("type[DataclassInstance]", cls))]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys: {known}")
    return cls(**data)


def check_choice(value: Any, valid: tuple, name: str) -> None:
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of {list(valid)}")


def check_number(value: Any, name: str, minimum: float = 0.0, strict: bool = True) -> None:
    """A finite real above (or at, ``strict=False``) ``minimum``; bools and strings are refused too."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        raise ConfigError(f"{name}={value!r} is invalid; valid: a finite number {'>' if strict else '>='} {minimum:g}")


def check_name_list(value: Any, name: str) -> None:
    """A list of module names; a bare string would be iterated character by character."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}={value!r} is invalid; valid: a list of module names, e.g. [classifier]")


QUANTIZATIONS = ("none", "8bit", "4bit")
QUANT_TYPES = ("nf4", "fp4")


def check_quantization(mode: str, quant_type: str, double_quant: Any, compute_dtype: str | None) -> None:
    """Fail in seconds (before any weights load) on a value bitsandbytes cannot honour."""
    if mode not in QUANTIZATIONS:
        raise ConfigError(f"model.quantization={mode!r} is not valid; choose one of {list(QUANTIZATIONS)}")
    if quant_type not in QUANT_TYPES:
        raise ConfigError(f"model.bnb_4bit_quant_type={quant_type!r} is not valid; choose one of {list(QUANT_TYPES)}")
    if not isinstance(double_quant, bool):
        raise ConfigError(f"model.bnb_4bit_use_double_quant={double_quant!r} is not valid; use true or false")
    if compute_dtype is not None and compute_dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(
            f"model.bnb_4bit_compute_dtype={compute_dtype!r} is not valid; choose float32, bfloat16, "
            "float16 or null (= model.dtype)"
        )
    if mode != "none" and importlib.util.find_spec("bitsandbytes") is None:
        raise ModelUnavailableError(f"model.quantization={mode} needs bitsandbytes: pip install 'bitsandbytes>=0.45'")


@dataclass
class ProjectionOptions:
    """configs/projection/*.yaml: the adapter (its optimizer settings live in configs/optimizer/)."""

    name: str
    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    target_modules: list[str] | str | None = None  # overrides model.target_modules when set


@dataclass
class ModelOptions:
    """configs/model/*.yaml. ``pretrained``: a hub id, a local dir, ``packaged:<module>`` or ``tiny:<bert|llama>``."""

    name: str
    pretrained: str
    task_type: str = "seq_cls"
    gguf_file: str | None = None
    target_modules: list[str] | str = field(default_factory=lambda: ["query", "value"])
    modules_to_save: list[str] = field(default_factory=list)
    dims: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None  # where the tokenizer lives when not beside the weights (tiny models)
    dtype: str = "float32"
    # bitsandbytes base (train/quantization.py): none | 8bit | 4bit; the 4-bit keys are BitsAndBytesConfig's
    quantization: str = "none"
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: str | None = None  # None: model.dtype

    def __post_init__(self) -> None:
        check_choice(self.task_type, ("seq_cls", "causal_lm"), "model.task_type")
        check_choice(self.dtype, ("float32", "bfloat16"), "model.dtype")
        check_quantization(
            self.quantization, self.bnb_4bit_quant_type, self.bnb_4bit_use_double_quant, self.bnb_4bit_compute_dtype
        )
        check_name_list(self.modules_to_save, "model.modules_to_save")


@dataclass
class TrainerOptions:
    """configs/trainer/*.yaml (see default.yaml for what each key means)."""

    max_steps: int = -1
    num_epochs: float = 1.0
    batch_size: int = 32
    eval_batch_size: int = 64
    grad_accum: int = 1
    warmup_ratio: float = 0.06
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    eval_strategy: str = "epoch"
    eval_steps: int | None = None
    save_steps: int = 500
    save_total_limit: int | None = 2
    # best vs last: Trainer's own options (the best evaluated checkpoint is tracked and never rotated away)
    load_best_model_at_end: bool = False  # true: the saved adapter is the best evaluated step's, not the last
    metric_for_best_model: str | None = None  # null: the task's main metric (loss for causal-LM tasks)
    greater_is_better: bool | None = None  # null: Trainer's rule (false for a name ending in "loss", else true)
    logging_steps: int = 10
    resume: bool = False
    init_adapter: str | None = None  # a saved adapter dir: start θ from it (head fresh), e.g. LoRA's MNLI start
    deterministic: bool = False
    num_workers: int = 0
    progress_bar: bool = True
    # scale-out: passed to TrainingArguments by train/distributed.py (configs/trainer/default.yaml says what each does)
    use_cpu: bool | None = None
    ddp_backend: str | None = None
    ddp_find_unused_parameters: bool | None = None
    ddp_timeout: int = 1800
    fsdp: str | list[str] = ""
    fsdp_config: dict[str, Any] = field(default_factory=dict)
    deepspeed: str | None = None
    torch_compile: bool = False
    torch_compile_backend: str | None = None
    torch_compile_mode: str | None = None
    divergence_factor: float | None = 4.0  # stop as failed when the smoothed loss stays above k × its first value
    divergence_patience: int = 3  # ... for this many consecutive logging steps

    def __post_init__(self) -> None:
        check_choice(self.precision, ("fp32", "bf16"), "trainer.precision")
        check_choice(self.eval_strategy, ("epoch", "steps", "no"), "trainer.eval_strategy")
        check_choice(
            self.lr_scheduler,
            (
                "linear",
                "cosine",
                "constant",
                "constant_with_warmup",
                "cosine_with_restarts",
                "polynomial",
                "inverse_sqrt",
            ),
            "trainer.lr_scheduler",
        )
        for key in ("batch_size", "eval_batch_size", "grad_accum", "save_steps", "logging_steps"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"trainer.{key} must be a positive integer, got {value!r}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"trainer.max_steps must be -1 (use num_epochs) or > 0, got {self.max_steps!r}")
        if self.eval_strategy == "steps" and not self.eval_steps:
            raise ConfigError("trainer.eval_strategy=steps needs trainer.eval_steps > 0")
        if self.save_total_limit is not None and self.save_total_limit < 2:
            # a crash while the newest checkpoint is written must leave a complete older one
            raise ConfigError(f"trainer.save_total_limit must be >= 2 or null, got {self.save_total_limit!r}")
        self._check_best()
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"trainer.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.divergence_factor is not None:
            check_number(self.divergence_factor, "trainer.divergence_factor", minimum=1.0)
        if (
            isinstance(self.divergence_patience, bool)
            or not isinstance(self.divergence_patience, int)
            or self.divergence_patience <= 0
        ):
            raise ConfigError(
                f"trainer.divergence_patience={self.divergence_patience!r} is invalid; valid: a positive integer"
            )

    def _check_best(self) -> None:
        """Trainer keeps the best checkpoint only when checkpoints fall on evaluated steps."""
        if not self.load_best_model_at_end:
            return
        if self.eval_strategy == "no":
            raise ConfigError(
                "trainer.load_best_model_at_end=true needs evaluations during training; "
                "set trainer.eval_strategy=epoch or steps"
            )
        if self.eval_strategy == "steps" and self.eval_steps and self.save_steps % self.eval_steps:
            raise ConfigError(
                f"trainer.load_best_model_at_end=true saves on evaluated steps: trainer.save_steps={self.save_steps} "
                f"must be a multiple of trainer.eval_steps={self.eval_steps}"
            )


@dataclass
class LoggerOptions:
    """configs/logger/*.yaml: ``wandb`` (offline unless WANDB_MODE says otherwise) or ``none``."""

    name: str = "none"
    project: str = "lorazoo"
    entity: str | None = None
    mode: str = "offline"
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    log_model: bool = False
    verbose: bool = False  # true: W&B's own console messages (wandb: ...) are shown

    def __post_init__(self) -> None:
        check_choice(self.name, ("wandb", "none"), "logger.name")
        check_choice(self.mode, ("offline", "online", "disabled"), "logger.mode")
