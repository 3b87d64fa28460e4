"""Instruction-tuning examples: the JSONL schema and its validation.

One JSON object per line, in either form::

    {"prompt": "What is 2 + 2?", "response": "4", "system": "optional system message"}
    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}, ...]}

Roles are ``system`` (only first), ``user`` and ``assistant``; at least one assistant message with
non-empty content is required, and every assistant message carries loss (multi-turn chats learn all
their replies). Every error names the file and the record number (1-based line number).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmbricks.errors import ConfigError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    """One chat: ``messages`` as ``{"role", "content"}`` dicts; ``where`` names its origin for errors."""

    messages: tuple[dict[str, str], ...]
    where: str = ""

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """The messages before the last assistant turn (what a generation is conditioned on)."""
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return list(self.messages[:last])

    @property
    def final_response(self) -> str:
        """The content of the last assistant message."""
        return [m for m in self.messages if m["role"] == "assistant"][-1]["content"]


def example_from_record(obj: Any, where: str) -> Example:
    """Validate one decoded JSON record into an :class:`Example`.

    Args:
        obj: the decoded JSON value.
        where: e.g. ``"data.jsonl: record 12"``, prefixed to every error.

    Returns:
        The example.

    Raises:
        ConfigError naming ``where`` and the field at fault.
    """
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        extra = set(obj) - {"messages", "id"}
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {sorted(extra)} beside 'messages'")
        raw = obj["messages"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{where}: 'messages' must be a non-empty list")
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or set(m) != {"role", "content"}:
                raise ConfigError(f"{where}: messages[{i}] must be an object with 'role' and 'content'")
            if m["role"] not in ROLES:
                raise ConfigError(f"{where}: messages[{i}].role {m['role']!r} is not one of {ROLES}")
            if not isinstance(m["content"], str):
                raise ConfigError(f"{where}: messages[{i}].content must be a string")
            if m["role"] == "system" and i != 0:
                raise ConfigError(f"{where}: messages[{i}]: a system message may only come first")
            messages.append({"role": m["role"], "content": m["content"]})
    else:
        for key in ("prompt", "response"):
            if key not in obj:
                raise ConfigError(f"{where}: missing field {key!r} (or give 'messages')")
            if not isinstance(obj[key], str):
                raise ConfigError(f"{where}: field {key!r} must be a string")
        extra = set(obj) - {"prompt", "response", "system", "id"}
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {sorted(extra)}")
        messages = []
        if obj.get("system"):
            messages.append({"role": "system", "content": str(obj["system"])})
        messages += [
            {"role": "user", "content": obj["prompt"]},
            {"role": "assistant", "content": obj["response"]},
        ]
    replies = [m for m in messages if m["role"] == "assistant"]
    if not replies:
        raise ConfigError(f"{where}: no assistant message (nothing to learn)")
    if any(not m["content"].strip() for m in replies):
        raise ConfigError(f"{where}: empty response")
    if not any(m["role"] == "user" for m in messages):
        raise ConfigError(f"{where}: no user message")
    return Example(messages=tuple(messages), where=where)


def jsonl_records(lines: Iterable[str], source: str) -> Iterator[tuple[str, Any]]:
    """``(where, object)`` of each non-blank JSON line, ``where`` being ``"{source}: record {n}"`` (1-based line).

    Raises:
        ConfigError: a line is not valid JSON (naming its record), or there is no record at all.
    """
    found = False
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}: record {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: invalid JSON ({exc.msg})") from None
        found = True
        yield where, obj
    if not found:
        raise ConfigError(f"{source}: no records")


def dump_jsonl(objects: Iterable[Any], path: str | Path) -> Path:
    """Write one JSON object per line (UTF-8, non-ASCII kept); returns ``path``."""
    path = Path(path)
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects), encoding="utf-8")
    return path


def read_text(path: Path) -> str:
    """A UTF-8 file's text (ConfigError naming the file when it cannot be read)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


def parse_jsonl(lines: Iterable[str], source: str) -> list[Example]:
    """Examples from JSONL text lines (blank lines skipped); errors name ``source`` and the record."""
    return [example_from_record(obj, where) for where, obj in jsonl_records(lines, source)]


def read_jsonl(path: str | Path) -> list[Example]:
    """Read an instruction-tuning JSONL file (schema in this module's docstring)."""
    return parse_jsonl(read_text(Path(path)).splitlines(), str(path))


def write_jsonl(examples: Iterable[Example], path: str | Path) -> Path:
    """Write examples in the ``messages`` form (round-trips through :func:`read_jsonl`)."""
    return dump_jsonl(({"messages": list(e.messages)} for e in examples), path)
