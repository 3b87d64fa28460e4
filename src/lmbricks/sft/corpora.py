"""Instruction-tuning examples from the local corpora (``lmbricks.data``).

- ``dialogue``: chatterbot-corpus and chitchat turns ``User: ...`` / ``Assistant: ...`` become
  chats; long conversations are cut into windows of at most ``max_turns`` user/assistant exchanges,
  and a trailing user turn without a reply is dropped.
- ``champ``: CHAMP competition problems (the ``math`` domain's records with source
  ``champ-dataset``): the user turn is the problem, the reply is the solution followed by
  ``Answer: ...``.
"""

from __future__ import annotations

import re

from lmbricks.errors import ConfigError
from lmbricks.sft.schema import Example

SOURCES = ("dialogue", "champ")
_TURN = re.compile(r"^(User|Assistant): ?", re.MULTILINE)


def parse_turns(text: str) -> list[dict[str, str]]:
    """``User: ...`` / ``Assistant: ...`` lines as messages (continuation lines join their turn)."""
    parts = _TURN.split(text)
    messages: list[dict[str, str]] = []
    for who, content in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if who == "User" else "assistant"
        content = content.strip()
        if messages and messages[-1]["role"] == role:  # two lines of one speaker: one turn
            messages[-1]["content"] += "\n" + content
        else:
            messages.append({"role": role, "content": content})
    return messages


def dialogue_examples(split: str = "train", max_turns: int = 4, source: str | None = None) -> list[Example]:
    """Chats from the ``dialogue`` domain.

    Args:
        split: ``train``, ``validation`` or ``test``.
        max_turns: at most this many user/assistant exchanges per example.
        source: keep only records of this source (``chatterbot-corpus`` or ``chitchat-dataset``).

    Returns:
        Examples; ``where`` names the record id and window.
    """
    from lmbricks.data import load_records

    out = []
    for rec in load_records("dialogue", split):
        if source is not None and rec.get("source") != source:
            continue
        msgs = parse_turns(rec["text"])
        while msgs and msgs[0]["role"] != "user":
            msgs = msgs[1:]
        pairs = [
            (msgs[i], msgs[i + 1])
            for i in range(0, len(msgs) - 1, 2)
            if msgs[i]["role"] == "user" and msgs[i + 1]["role"] == "assistant" and msgs[i + 1]["content"]
        ]
        for w in range(0, len(pairs), max_turns):
            window = [m for pair in pairs[w : w + max_turns] for m in pair]
            if window:
                out.append(Example(messages=tuple(window), where=f"dialogue {rec['id']} turns {w}+"))
    return out


def split_champ(text: str) -> tuple[str, str, str]:
    """(problem, solution, answer) of a CHAMP record's text ``Problem: ...\\n\\nSolution: ...\\n\\nAnswer: ...``."""
    m = re.match(r"Problem:\s*(.*?)\n\nSolution:\s*(.*?)\n\nAnswer:\s*(.*)\Z", text, re.DOTALL)
    if m is None:
        raise ConfigError(f"not a CHAMP record: {text[:60]!r}")
    return m.group(1).strip(), m.group(2).strip(), m.group(3).strip()


def champ_records(split: str = "train") -> list[dict[str, str]]:
    """CHAMP problems of a split as ``{"id", "problem", "solution", "answer"}``."""
    from lmbricks.data import load_records

    out = []
    for rec in load_records("math", split):
        if rec.get("source") != "champ-dataset":
            continue
        problem, solution, answer = split_champ(rec["text"])
        out.append({"id": rec["id"], "problem": problem, "solution": solution, "answer": answer})
    return out


def champ_examples(split: str = "train") -> list[Example]:
    """CHAMP problems as chats: the problem, then the solution and ``Answer: ...``."""
    return [
        Example(
            messages=(
                {"role": "user", "content": r["problem"]},
                {"role": "assistant", "content": f"{r['solution']}\n\nAnswer: {r['answer']}"},
            ),
            where=f"champ {r['id']}",
        )
        for r in champ_records(split)
    ]


def corpus_examples(name: str, split: str, max_turns: int = 4) -> list[Example]:
    """Examples of a built-in source (:data:`SOURCES`)."""
    if name == "dialogue":
        return dialogue_examples(split, max_turns)
    if name == "champ":
        return champ_examples(split)
    raise ConfigError(f"sft.sources: unknown corpus {name!r} (known: {', '.join(SOURCES)})")
