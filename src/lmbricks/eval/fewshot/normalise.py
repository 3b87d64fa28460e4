"""Answer extraction and normalisation for exact-match scoring.

Exact match compares :func:`normalise` of the extracted prediction with :func:`normalise` of each
gold form. Normalisation: lower case; TeX wrappers ``$``, ``\\(``, ``\\)``, ``\\boxed{...}`` and
``\\text{...}`` removed; ``\\frac{a}{b}`` becomes ``a/b``; ``\\cdot``, ``\\times`` and ``*`` removed;
thousands separators in numbers removed; all whitespace removed; trailing ``.``, ``,``, ``;``, ``:``
removed; ``5.0`` becomes ``5``. Labels (language names) compare the first word of the answer, or
the one known label a sentence names (:func:`label_of`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_WRAP = re.compile(r"\\(?:boxed|text|mathrm)\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TRAILING_ZERO = re.compile(r"(?<![\d.])(\d+)\.0+(?![\d.])")
_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:)\s*", re.IGNORECASE)


def normalise(text: str) -> str:
    """The canonical form of an answer string (see the module docstring)."""
    s = text.strip().lower()
    for _ in range(3):  # nested wrappers
        s = _WRAP.sub(r"\1", s)
        s = _FRAC.sub(r"(\1)/(\2)", s)
    s = s.replace("\\(", "").replace("\\)", "").replace("$", "")
    s = s.replace("\\cdot", "").replace("\\times", "").replace("*", "")
    s = s.replace("\\left", "").replace("\\right", "")
    s = _THOUSANDS.sub("", s)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".,;:")
    s = _TRAILING_ZERO.sub(r"\1", s)
    s = re.sub(r"\((\w+)\)/\((\w+)\)", r"\1/\2", s)  # (3)/(4) from \frac{3}{4} -> 3/4
    return s


def extract_answer(generation: str, cot: bool) -> str:
    """The answer part of a generation.

    Direct answers are the first non-empty line. Chain-of-thought answers follow the last
    ``answer is`` / ``Answer:`` marker (the first line after it), else the last non-empty line.
    """
    text = generation.strip()
    if cot:
        marks = list(_ANSWER_IS.finditer(text))
        if marks:
            text = text[marks[-1].end() :]
            return text.strip().splitlines()[0].strip() if text.strip() else ""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[0].strip() if lines else ""


def label_of(prediction: str, labels: Sequence[str] = ()) -> str:
    """The label a free-text answer gives: its first word, lower case.

    When ``labels`` are known and the first word is not one of them (a chat model's sentence such
    as "The language of the text is German."), the answer's label is the one label it names, if it
    names exactly one (as a whole word); otherwise the first word is kept (and scores as wrong).
    """
    text = prediction.strip().lower()
    first = re.split(r"[^\w]+", text, maxsplit=1)[0] if text else ""
    names = {normalise(x) for x in labels}
    if not names or first in names:
        return first
    named = {n for n in names if re.search(rf"\b{re.escape(n)}\b", text)}
    return named.pop() if len(named) == 1 else first


def is_correct(prediction: str, answers: tuple[str, ...] | list[str], kind: str, labels: Sequence[str] = ()) -> bool:
    """Exact match after normalisation against any gold form (labels: :func:`label_of`)."""
    if kind == "label":
        return any(label_of(prediction, labels) == normalise(a) for a in answers)
    pred = normalise(prediction)
    return any(pred == normalise(a) for a in answers)
