"""A registry model's conversion is checked against its pinned tensors: a new dequantiser is noticed."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbricks.checkpoint.provenance import model_identity
from lmbricks.errors import FetchError
from lmbricks.hub.fetch import _check_conversion
from lmbricks.hub.registry import REGISTRY


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))


def test_matching_conversion_passes_and_another_is_refused(tiny_llama: Path) -> None:
    identity = model_identity(tiny_llama)
    assert identity is not None
    notes: list[str] = []
    _check_conversion(tiny_llama, identity.weights, "tiny", accept=False, progress=notes.append)
    assert notes == []
    with pytest.raises(FetchError, match=r"tiny: this environment's conversion .* gives other weights .* --accept"):
        _check_conversion(tiny_llama, "0" * 64, "tiny", accept=False, progress=notes.append)
    _check_conversion(tiny_llama, "0" * 64, "tiny", accept=True, progress=notes.append)
    assert len(notes) == 1 and notes[0].startswith("note: tiny: this environment's conversion")


def test_the_default_model_has_a_pinned_conversion() -> None:
    spec = REGISTRY["smollm2-135m-instruct"]
    assert spec.weights_sha256 is not None and len(spec.weights_sha256) == 64
