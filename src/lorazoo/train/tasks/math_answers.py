"""Final answers of math solutions: the GSM8K '####' reference, the last \\boxed{...} of a generation, and
equivalence decided by HF's math-verify (LaTeX parsed to sympy and compared symbolically), so that
``\\frac{1}{2}`` = ``0.5``, ``\\boxed{10}`` = ``10`` and ``$1,000`` = ``1000`` all count as correct.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from lorazoo.train.errors import DataFormatError

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")
GSM8K_MARK = "####"
# MetaMathQA's answer sentence, which the Uni-LoRA/MetaMath eval scripts split on
# (KaiyangLi1992/Uni-LoRA@e622e78:math_instruction_tuning/instruction_tuning_eval/MATH_eval.py, process_results)
METAMATH_MARK = "The answer is:"


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, nested braces matched;
    ``\\boxed 5`` (no braces) gives ``5``. None when there is none or its braces never close."""
    found: str | None = None
    for match in _BOXED.finditer(text):
        start = match.end()
        if match.group(1) is None:  # "\boxed 5": the token up to the next space or '$'
            token = re.match(r"[^\s$]+", text[start:])
            found = token.group(0) if token else found
            continue
        depth = 1
        for pos in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            if depth == 0:
                found = text[start:pos]
                break
    return found


def gsm8k_reference(answer: str, where: str) -> str:
    """The reference answer of a GSM8K solution: the text after its last '####'. A solution without one is
    malformed data, never guessed at: DataFormatError naming ``where`` (file:line)."""
    if GSM8K_MARK not in answer:
        raise DataFormatError(f"{where}: GSM8K answer has no '{GSM8K_MARK} <final answer>' line")
    final = answer.rsplit(GSM8K_MARK, 1)[1].strip()
    if not final:
        raise DataFormatError(f"{where}: GSM8K answer has nothing after '{GSM8K_MARK}'")
    return final


def answer_span(generation: str) -> tuple[str, bool]:
    """The part of a generation that states the final answer and whether it is the whole text: the last
    \\boxed{} content, else the last "The answer is: X" (MetaMathQA's format), else the text after the last
    '####' (GSM8K's), else the whole text (math-verify then takes its last expression)."""
    boxed = last_boxed(generation)
    if boxed is not None:
        return boxed, False
    if METAMATH_MARK in generation:  # MetaMathQA's responses end "The answer is: X"; the sentence up to ".\n"
        stated = generation.rsplit(METAMATH_MARK, 1)[1].split(".\n")[0].strip()
        return stated.removesuffix(".").strip(), False
    if GSM8K_MARK in generation:
        return generation.rsplit(GSM8K_MARK, 1)[1].strip(), False
    return generation, True


def _timeout(seconds: int) -> int | None:
    """math-verify times out with signal.alarm, which only the main thread may use; elsewhere no timeout."""
    return seconds if threading.current_thread() is threading.main_thread() else None


def parse_answer(answer: str, whole_text: bool = False) -> list[Any]:
    """math-verify's parse of one answer. A bare answer (``\\frac{\\sqrt3}{2}``, ``1,000``) is wrapped in
    \\boxed{} so LaTeX without '$' delimiters parses; ``whole_text`` parses free text as it is."""
    from math_verify import parse

    return parse(answer if whole_text else f"\\boxed{{{answer}}}", parsing_timeout=_timeout(5))


def extract_prediction(generation: str) -> list[Any]:
    """math-verify's reading of a generation's final answer (see ``answer_span``)."""
    span, whole = answer_span(generation)
    return parse_answer(span, whole_text=whole)


def is_equivalent(prediction: list[Any], reference: list[Any]) -> bool:
    """math-verify's verdict; an unparsable prediction or reference is never correct."""
    from math_verify import verify

    return bool(prediction) and bool(reference) and bool(verify(reference, prediction, timeout_seconds=_timeout(5)))


def shown(parsed: list[Any]) -> str | None:
    """A printable form of a parsed answer (its string form as math-verify extracted it)."""
    return str(parsed[-1]) if parsed else None
