"""Answer extraction and normalisation for exact-match scoring.

Exact match compares :func:`normalise` of the extracted prediction with :func:`normalise` of each
gold form. Normalisation: lower case; TeX wrappers ``$``, ``\\(``, ``\\)``, ``\\boxed{...}`` and
``\\text{...}`` removed; ``\\frac{a}{b}`` becomes ``a/b``; ``\\cdot``, ``\\times`` and ``*`` removed;
thousands separators in numbers removed; all whitespace removed; trailing ``.``, ``,``, ``;``, ``:``
removed; ``5.0`` becomes ``5``. Labels (language names) compare their first word after that.
"""

from __future__ import annotations

import re

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


def is_correct(prediction: str, answers: tuple[str, ...] | list[str], kind: str) -> bool:
    """Exact match after normalisation against any gold form (labels: first word only)."""
    pred = normalise(prediction)
    if kind == "label":
        first = re.split(r"[^\w]+", prediction.strip().lower(), maxsplit=1)[0] if prediction.strip() else ""
        return any(first == normalise(a) for a in answers)
    return any(pred == normalise(a) for a in answers)
