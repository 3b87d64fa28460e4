"""The test tree itself: pytest imports test modules by basename (no packages), so they must be unique."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def test_test_module_basenames_are_unique() -> None:
    root = Path(__file__).parent
    names = Counter(p.name for p in root.rglob("*.py") if p.name not in ("conftest.py", "__init__.py"))
    duplicates = sorted(name for name, count in names.items() if count > 1)
    assert not duplicates, f"rename these so each basename is unique under tests/: {duplicates}"
