"""Few-shot tasks built from the local corpora, each with a deterministic split.

- ``champ``: CHAMP competition problems (``math`` domain). Evaluation items: the validation and
  test problems; demonstrations: the training problems with the shortest solutions (so an 8-shot
  chain-of-thought prompt stays within a small model's reach), first k for k shots (nested sets).
  Gold answers may list equivalent forms (``C(10, 5), or equivalently 252``): any form counts.
- ``langid``: name the language of a paragraph from the Debian handbook (``multilingual``: 14
  languages). Evaluation items come from the test split, demonstrations from the train split; both
  cycle through the languages in a fixed order, taking paragraphs of at least 80 characters in key
  order, shortened to 160 characters at a word boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lmbricks.errors import UnknownNameError

LANGUAGES = {
    "ar": "Arabic", "ca": "Catalan", "de": "German", "en": "English", "es": "Spanish",
    "fa": "Persian", "fr": "French", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "nb": "Norwegian", "pt": "Portuguese", "ru": "Russian", "zh": "Chinese",
}  # fmt: skip


@dataclass(frozen=True)
class Item:
    """One question with its gold answer(s) and, for demonstrations, a worked rationale."""

    id: str
    question: str
    answers: tuple[str, ...]
    rationale: str = ""

    @property
    def answer(self) -> str:
        """The first (canonical) gold form."""
        return self.answers[0]


@dataclass
class Task:
    """A few-shot task: instruction, evaluation items, demonstration pool (in the order used)."""

    name: str
    instruction: str
    kind: str  # "math" (normalised expression match) or "label" (one of ``labels``)
    items: list[Item]
    demos: list[Item]
    labels: list[str] = field(default_factory=list)


_ALTERNATIVE = re.compile(r",?\s*or (?:equivalently|approximately)\s+", re.IGNORECASE)


def champ_answers(answer: str) -> tuple[str, ...]:
    """The accepted forms of a CHAMP answer (``X, or equivalently Y`` gives X and Y)."""
    return tuple(p.strip() for p in _ALTERNATIVE.split(answer) if p.strip())


def champ_task() -> Task:
    """CHAMP final answers (see the module docstring for the split)."""
    from lmbricks.sft.corpora import champ_records

    def item(r: dict[str, str]) -> Item:
        return Item(id=r["id"], question=r["problem"], answers=champ_answers(r["answer"]), rationale=r["solution"])

    items = [item(r) for split in ("validation", "test") for r in champ_records(split)]
    pool = sorted(champ_records("train"), key=lambda r: (len(r["problem"]) + len(r["solution"]), r["id"]))
    return Task(
        name="champ",
        instruction="Solve the problem. End with the final answer.",
        kind="math",
        items=items,
        demos=[item(r) for r in pool[:16]],
    )


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit // 2 else cut


def _lang_items(split: str, per_language: int, max_chars: int = 160) -> list[Item]:
    from lmbricks.data.parallel import paragraphs_by_key

    by_lang = {}
    for code in LANGUAGES:
        paras = paragraphs_by_key(f"multilingual/{code}", split)
        by_lang[code] = [(k, _shorten(v, max_chars)) for k, v in sorted(paras.items()) if len(v) >= 80][:per_language]
    out = []
    for i in range(per_language):  # interleave the languages: item i of each in turn
        for code, name in LANGUAGES.items():
            if i < len(by_lang[code]):
                key, text = by_lang[code][i]
                words = [w for w in text.split()[:3]] if code not in ("ja", "zh") else [text[:6]]
                quoted = ", ".join(f'"{w}"' for w in words)
                out.append(
                    Item(
                        id=f"{code}:{key}",
                        question=text,
                        answers=(name,),
                        rationale=f"The text begins with {quoted}, which is written in {name}.",
                    )
                )
    return out


def langid_task(per_language: int = 8, max_chars: int = 160) -> Task:
    """Language identification over the 14 handbook languages (split in the module docstring).

    Args:
        per_language: evaluation paragraphs per language.
        max_chars: paragraphs (questions and demonstrations) are shortened to this many characters
            at a word boundary (shorter: cheaper prompts, e.g. for the tour).
    """
    return Task(
        name="langid",
        instruction="Name the language of the text (one word, in English).",
        kind="label",
        items=_lang_items("test", per_language, max_chars),
        demos=_lang_items("train", 2, max_chars),
        labels=list(LANGUAGES.values()),
    )


TASKS = {"champ": champ_task, "langid": langid_task}


def get_task(name: str) -> Task:
    """A task by name (:data:`TASKS`)."""
    if name not in TASKS:
        raise UnknownNameError(f"unknown few-shot task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]()
