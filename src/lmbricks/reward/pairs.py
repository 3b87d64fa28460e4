"""Preference pairs: the JSONL schema and built-in pairs from the local corpora.

JSONL, one object per line::

    {"prompt": "How do I list files?", "chosen": "Use ls.", "rejected": "Bananas are yellow."}

All three fields are required, strings, and ``chosen`` / ``rejected`` must be non-empty and differ;
errors name the file and the record number (1-based line).

Built-in pairs (deterministic given the seed):

- ``dialogue``: a chatterbot-corpus question with its own reply (chosen) versus a reply to a
  question from another topic file (rejected: off-topic).
- ``chitchat``: the same construction on the chitchat-dataset conversations (first exchange of
  each); a different style of dialogue, used as a distribution shift.
- ``champ``: a CHAMP problem with its solution and answer (chosen) versus the same text with one
  number changed (rejected: a corrupted step or answer).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from lmbricks.errors import ConfigError
from lmbricks.sft.schema import dump_jsonl, jsonl_records, read_text

BUILTIN = ("dialogue", "chitchat", "champ")


@dataclass(frozen=True)
class Pair:
    """A prompt with a preferred and a dispreferred response; ``where`` names its origin."""

    prompt: str
    chosen: str
    rejected: str
    where: str = ""


def parse_pairs(lines: list[str], source: str) -> list[Pair]:
    """Pairs from JSONL lines (blank lines skipped); errors name ``source`` and the record number."""
    out = []
    for where, obj in jsonl_records(lines, source):
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        for key in ("prompt", "chosen", "rejected"):
            if key not in obj:
                raise ConfigError(f"{where}: missing field {key!r}")
            if not isinstance(obj[key], str):
                raise ConfigError(f"{where}: field {key!r} must be a string")
        if not obj["chosen"].strip() or not obj["rejected"].strip():
            raise ConfigError(f"{where}: empty response")
        if obj["chosen"] == obj["rejected"]:
            raise ConfigError(f"{where}: chosen and rejected are identical")
        extra = set(obj) - {"prompt", "chosen", "rejected", "id"}
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {sorted(extra)}")
        out.append(Pair(obj["prompt"], obj["chosen"], obj["rejected"], where))
    return out


def read_pairs(path: str | Path) -> list[Pair]:
    """Read a preference JSONL file (schema in the module docstring)."""
    return parse_pairs(read_text(Path(path)).splitlines(), str(path))


def write_pairs(pairs: list[Pair], path: str | Path) -> Path:
    """Write pairs as JSONL (round-trips through :func:`read_pairs`)."""
    return dump_jsonl(({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs), path)


def _off_topic(groups: dict[str, list[tuple[str, str, str]]], seed: int, name: str) -> list[Pair]:
    rng = random.Random(seed)
    keys = sorted(groups)
    out = []
    for g in keys:
        others = [k for k in keys if k != g]
        for rid, question, reply in groups[g]:
            if not others:
                break
            other = groups[rng.choice(others)]
            wrong = rng.choice(other)[2]
            if wrong != reply:
                out.append(Pair(question, reply, wrong, f"{name} {rid}"))
    rng.shuffle(out)
    return out


def dialogue_pairs(split: str = "train", seed: int = 0, source: str = "chatterbot-corpus") -> list[Pair]:
    """In-topic versus off-topic replies from the ``dialogue`` domain (first exchange of each record).

    Chatterbot records are grouped by topic file (``ai.yml``, ``politics.yml``...); chitchat
    conversations each form their own group.
    """
    from lmbricks.data import load_records
    from lmbricks.sft.corpora import parse_turns

    groups: dict[str, list[tuple[str, str, str]]] = {}
    for rec in load_records("dialogue", split):
        if rec.get("source") != source:
            continue
        msgs = parse_turns(rec["text"])
        if len(msgs) < 2 or msgs[0]["role"] != "user" or msgs[1]["role"] != "assistant":
            continue
        topic = rec["id"].split("#")[0] if source == "chatterbot-corpus" else rec["id"]
        groups.setdefault(topic, []).append((rec["id"], msgs[0]["content"], msgs[1]["content"]))
    return _off_topic(groups, seed, source)


_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")


def corrupt_number(text: str, rng: random.Random) -> str | None:
    """``text`` with one integer changed by a small non-zero amount (None when it has no integer)."""
    spots = list(_NUMBER.finditer(text))
    if not spots:
        return None
    m = rng.choice(spots)
    value = int(m.group())
    new = value + rng.choice([-2, -1, 1, 2, 3]) if value > 2 else value + rng.choice([1, 2, 3])
    return text[: m.start()] + str(new) + text[m.end() :]


def champ_pairs(split: str = "train", seed: int = 0, max_chars: int | None = 700) -> list[Pair]:
    """Correct CHAMP solutions versus the same solution with one number changed.

    Args:
        split: the ``math`` split.
        seed: which number is changed, and by how much.
        max_chars: skip problems whose problem + solution is longer (keeps sequences short).
    """
    from lmbricks.sft.corpora import champ_records

    rng = random.Random(seed)
    out = []
    for r in champ_records(split):
        if max_chars is not None and len(r["problem"]) + len(r["solution"]) > max_chars:
            continue
        good = f"{r['solution']}\n\nAnswer: {r['answer']}"
        bad = corrupt_number(good, rng)
        if bad is not None and bad != good:
            out.append(Pair(r["problem"], good, bad, f"champ {r['id']}"))
    return out


def builtin_pairs(name: str, split: str = "train", seed: int = 0) -> list[Pair]:
    """Built-in pairs by name (:data:`BUILTIN`)."""
    if name == "dialogue":
        return dialogue_pairs(split, seed, "chatterbot-corpus")
    if name == "chitchat":
        return dialogue_pairs(split, seed, "chitchat-dataset")
    if name == "champ":
        return champ_pairs(split, seed)
    raise ConfigError(f"unknown built-in pairs {name!r} (known: {', '.join(BUILTIN)})")


def load_pairs(spec: str, split: str = "train", seed: int = 0) -> list[Pair]:
    """A JSONL file path, or ``builtin:NAME`` (e.g. ``builtin:dialogue``)."""
    if spec.startswith("builtin:"):
        return builtin_pairs(spec.split(":", 1)[1], split, seed)
    return read_pairs(spec)
