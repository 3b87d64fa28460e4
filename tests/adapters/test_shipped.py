"""The bricks shipped for the default model: loadable, recorded on its hash, each helps its domain."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.adapters.conftest import REAL_HOME

from lmbricks.adapters import load_factors, read_brick
from lmbricks.adapters.base import base_model

ROOT = Path(__file__).resolve().parents[2] / "bricks" / "smollm2-135m-instruct"
DOMAINS = ("zh", "math", "code", "dialogue")


@pytest.mark.parametrize("domain", DOMAINS)
def test_shipped_brick_metadata(domain: str) -> None:
    info = read_brick(ROOT / domain)
    assert info.domain == domain and info.rank == 8 and len(info.targets) == 7
    # Measured at training time: at least 5% lower held-out perplexity, except the code brick,
    # which reached only -2.3% (the base already models Python well; see scripts/train_bricks.py).
    assert info.effect["ppl_change"] <= (-0.02 if domain == "code" else -0.05)
    assert (ROOT / domain / "adapter_model.safetensors").stat().st_size < 8 << 20
    assert len(load_factors(ROOT / domain)) == 30 * 7


@pytest.mark.integration
def test_shipped_bricks_match_the_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBRICKS_HOME", REAL_HOME)
    sha = base_model("smollm2-135m-instruct").sha256
    assert {read_brick(ROOT / d).base_sha256 for d in DOMAINS} == {sha}
