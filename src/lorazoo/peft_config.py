"""What PEFT's auto classes need from an exported adapter: a task type and a base they can load.

``AutoPeftModelForCausalLM.from_pretrained(<export>)`` picks its model class from ``task_type`` and
calls ``from_pretrained(base_model_name_or_path)``; ``packaged:<module>`` names and random test bases
mean nothing to it, so the export writes a loadable path (the packaged directory, or the directory or
hub id the base was loaded from).
"""

from __future__ import annotations

from typing import Any

from lorazoo.packaged import PREFIX, resolve_source

# transformers class-name suffix → PEFT TaskType value
TASK_TYPES = (
    ("ForSequenceClassification", "SEQ_CLS"),
    ("ForCausalLM", "CAUSAL_LM"),
    ("ForTokenClassification", "TOKEN_CLS"),
    ("ForQuestionAnswering", "QUESTION_ANS"),
    ("ForConditionalGeneration", "SEQ_2_SEQ_LM"),
    ("ForSeq2SeqLM", "SEQ_2_SEQ_LM"),
)


def peft_task_type(base_model: Any) -> str | None:
    """PEFT's task type for a transformers model class (None for a bare backbone: AutoPeftModel then)."""
    name = type(base_model).__name__
    return next((task for suffix, task in TASK_TYPES if name.endswith(suffix)), None)


def peft_base_path(configured: str | None, base_model: Any) -> str | None:
    """A base that ``from_pretrained`` resolves: the configured hub id / dir, a packaged model's directory,
    else the path the base was loaded from (``config._name_or_path``); None when there is none."""
    loaded_from = getattr(getattr(base_model, "config", None), "_name_or_path", "") or None
    if configured and configured.startswith(PREFIX):
        try:
            return resolve_source(configured, None)
        except OSError:
            return loaded_from
    if configured and not configured.startswith("tiny:"):
        return configured
    return loaded_from


# PEFT's task models put their head into modules_to_save themselves (peft@0.21 peft_model.py:
# PeftModelForSequenceClassification / ForTokenClassification ``classifier_module_names``), matched by suffix,
# and then expect its weights in the adapter file
IMPLIED_HEADS = {"SEQ_CLS": ("classifier", "score"), "TOKEN_CLS": ("classifier", "score")}


def implied_head_modules(task_type: str | None, base_model: Any, saved: Any) -> list[str]:
    """Modules PEFT will treat as saved heads for ``task_type`` that the export does not hold yet."""
    suffixes = IMPLIED_HEADS.get(task_type or "", ())
    names = [n for n, _ in base_model.named_modules() if n and n.endswith(suffixes) and n not in saved]
    return [n for n in names if not any(n.startswith(other + ".") for other in names)]
