"""The test tree itself: pytest imports test modules by basename (no packages), so they must be unique."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def test_test_module_basenames_are_unique() -> None:
    root = Path(__file__).parent
    names = Counter(p.name for p in root.rglob("*.py") if p.name not in ("conftest.py", "__init__.py"))
    duplicates = sorted(name for name, count in names.items() if count > 1)
    assert not duplicates, f"rename these so each basename is unique under tests/: {duplicates}"


def _code_metrics():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "code_metrics.py"
    spec = importlib.util.spec_from_file_location("code_metrics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_rooms_import_only_lower_rooms() -> None:
    """docs/architecture.md's order: a room imports itself and the rooms below it, never the root facade."""
    metrics = _code_metrics()
    rooms = {metrics.room_of(p) for p in metrics.SRC.rglob("*.py")} - {metrics.ROOT}
    assert rooms <= set(metrics.ROOMS), (
        f"add these rooms to ROOMS in scripts/code_metrics.py: {rooms - set(metrics.ROOMS)}"
    )
    violations = metrics.import_violations()
    assert not violations, "imports against the room order:\n" + "\n".join(map(str, violations))


def test_import_direction_check_sees_a_violation(tmp_path: Path) -> None:
    """The check itself: an upward import and a root import in a low room are both reported."""
    metrics = _code_metrics()
    src = tmp_path / "lmbricks"
    (src / "checkpoint").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "checkpoint" / "x.py").write_text("from lmbricks.merge import merge\nfrom lmbricks import load_model\n")
    (src / "merge").mkdir()
    (src / "merge" / "y.py").write_text("from ..checkpoint import x\n")
    found = {(v.room, v.target_room) for v in metrics.import_violations(src)}
    assert found == {("checkpoint", "merge"), ("checkpoint", "<root>")}
