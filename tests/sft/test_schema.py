"""The JSONL schema: both forms parse, bad records fail naming their record number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmbricks.errors import ConfigError
from lmbricks.sft import parse_jsonl, read_jsonl, write_jsonl


def test_prompt_response_and_messages_forms() -> None:
    lines = [
        json.dumps({"prompt": "hi", "response": "hello", "system": "be brief"}),
        "",
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
    ]
    ex = parse_jsonl(lines, "f.jsonl")
    assert [m["role"] for m in ex[0].messages] == ["system", "user", "assistant"]
    assert ex[0].final_response == "hello"
    assert ex[1].prompt_messages == [{"role": "user", "content": "a"}]
    assert ex[1].where == "f.jsonl: record 3"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "hi"}, "missing field 'response'"),
        ({"prompt": "hi", "response": "   "}, "empty response"),
        ({"prompt": "hi", "response": "x", "extra": 1}, "unknown field"),
        ({"messages": [{"role": "user", "content": "a"}]}, "no assistant message"),
        ({"messages": [{"role": "bot", "content": "a"}]}, "role 'bot'"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}, "empty response"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_records_name_their_number(record: object, message: str) -> None:
    lines = [json.dumps({"prompt": "ok", "response": "fine"}), json.dumps(record)]
    with pytest.raises(ConfigError, match=rf"data.jsonl: record 2: .*{message}"):
        parse_jsonl(lines, "data.jsonl")


def test_invalid_json_names_record() -> None:
    with pytest.raises(ConfigError, match="data.jsonl: record 1: invalid JSON"):
        parse_jsonl(["{not json"], "data.jsonl")


def test_write_read_round_trip(tmp_path: Path, chats: list) -> None:
    path = write_jsonl(chats, tmp_path / "c.jsonl")
    back = read_jsonl(path)
    assert [e.messages for e in back] == [e.messages for e in chats]
