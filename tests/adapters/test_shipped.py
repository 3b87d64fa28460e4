"""The bricks shipped for the default model: loadable, recorded on its hash, each helps its domain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.adapters.conftest import REAL_HOME

from lmbricks.adapters import load_factors, read_brick
from lmbricks.adapters.base import base_model
from lmbricks.checkpoint import content_hash

ROOT = Path(__file__).resolve().parents[2] / "bricks" / "smollm2-135m-instruct"
DOMAINS = ("zh", "math", "code", "dialogue")


@pytest.mark.parametrize("domain", DOMAINS)
def test_shipped_brick_metadata(domain: str) -> None:
    info = read_brick(ROOT / domain)
    assert info.domain == domain and info.rank == 8 and len(info.targets) == 7
    # Measured at training time: at least 5% lower held-out perplexity on the domain's test prefix.
    assert info.effect["ppl_change"] <= -0.05
    assert info.effect["ppl_after"] < info.effect["ppl_before"]
    assert (ROOT / domain / "adapter_model.safetensors").stat().st_size < 8 << 20
    assert len(load_factors(ROOT / domain)) == 30 * 7


@pytest.mark.integration
def test_shipped_bricks_match_the_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBRICKS_HOME", REAL_HOME)
    sha = base_model("smollm2-135m-instruct").sha256
    assert {read_brick(ROOT / d).base_sha256 for d in DOMAINS} == {sha}


def test_table_was_measured_on_the_shipped_bricks() -> None:
    table = json.loads((ROOT / "table.json").read_text())
    for domain in DOMAINS:
        info = read_brick(ROOT / domain)
        assert table["brick_sha256"][domain] == content_hash(ROOT / domain)
        assert table["ppl"][domain][domain] == pytest.approx(info.effect["ppl_after"], rel=1e-9)
        assert table["ppl"]["base"][domain] == pytest.approx(info.effect["ppl_before"], rel=1e-9)
        assert table["ppl"][domain][domain] / table["ppl"]["base"][domain] - 1 <= -0.05
        assert set(table["ppl"][domain]) == set(table["domains"])


@pytest.mark.parametrize("domain", DOMAINS)
def test_shipped_records_carry_no_machine_path(domain: str) -> None:
    def strings(obj: object) -> list[str]:
        if isinstance(obj, dict):
            return [s for v in obj.values() for s in strings(v)]
        if isinstance(obj, list):
            return [s for v in obj for s in strings(v)]
        return [obj] if isinstance(obj, str) else []

    record = json.loads((ROOT / domain / "lmbricks.json").read_text())
    assert not [s for s in strings(record) if s.startswith(("/", "~")) or "/.cache/" in s]
    assert [i["ref"] for i in record["inputs"]] == ["smollm2-135m-instruct"]
    assert record["bricks"]["adapter"]["base_identity"]["sha256"] == record["bricks"]["adapter"]["base_sha256"]
