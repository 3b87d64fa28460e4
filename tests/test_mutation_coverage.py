"""scripts/mutation_coverage.py: its mutant list applies to the tree, and it reads pytest's outcomes right."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mutation_coverage.py"


@pytest.fixture(scope="module")
def mc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_coverage", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_coverage"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_listed_mutant_applies_exactly_once(mc: ModuleType) -> None:
    mutants = mc.load_mutants()
    assert set(mutants) == set(mc.AREAS)
    for area, rows in mutants.items():
        assert len(rows) >= (20 if area in ("proxy", "moe") else 3), area
        assert mc.check_mutants(rows) == [], area


def test_a_mutant_that_no_longer_applies_is_named(mc: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("x = a + b\ny = a + b\nz = c\n", encoding="utf-8")
    rows = [
        mc.Mutant("twice", "m.py", "a + b", "a - b"),
        mc.Mutant("gone", "m.py", "d * e", "d / e"),
        mc.Mutant("ok", "m.py", "z = c", "z = -c"),
        mc.Mutant("ok", "n.py", "q", "r"),
    ]
    problems = mc.check_mutants(rows, src=tmp_path)
    assert problems == [
        "twice: 'a + b' occurs 2 times in m.py (want exactly once)",
        "gone: 'd * e' occurs 0 times in m.py (want exactly once)",
        "ok: the name is used twice",
        "ok: no file n.py",
    ]


def test_junit_outcomes_fold_parametrised_cases_into_their_function(mc: ModuleType, tmp_path: Path) -> None:
    junit = tmp_path / "r.xml"
    junit.write_text(
        """<testsuites><testsuite>
        <testcase classname="tests.proxy.test_decode" name="test_a[1.0]"/>
        <testcase classname="tests.proxy.test_decode" name="test_a[1.5]"><failure message="x"/></testcase>
        <testcase classname="tests.proxy.test_decode" name="test_b"/>
        <testcase classname="tests.moe.test_layer" name="test_c"><error message="y"/></testcase>
        <testcase classname="tests.moe.test_layer" name="test_d"><skipped message="z"/></testcase>
        </testsuite></testsuites>""",
        encoding="utf-8",
    )
    assert mc._outcomes(junit) == {
        "tests/proxy/test_decode.py::test_a": True,
        "tests/proxy/test_decode.py::test_b": False,
        "tests/moe/test_layer.py::test_c": True,
        "tests/moe/test_layer.py::test_d": False,
    }


@pytest.fixture(scope="module")
def mm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_matrix", SCRIPT.with_name("mutation_matrix.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_matrix_joins_a_report_and_the_log_of_a_stopped_run(mm: ModuleType, tmp_path: Path) -> None:
    report = {
        "areas": {
            "proxy": {
                "baseline_failures": ["p::broken"],
                "tests": {"p::a": ["m1"], "p::b": [], "p::c": []},
                "mutants": {"m1": {"caught_by": ["p::a"]}, "m2": {"status": "not run (budget)"}},
            }
        }
    }
    (tmp_path / "r.json").write_text(json.dumps(report), encoding="utf-8")
    log = [
        "some pytest noise",
        json.dumps(
            {"area": "proxy", "baseline_tests": ["p::a", "p::b", "p::broken", "p::c", "p::d"], "baseline_failures": []}
        ),
        json.dumps({"area": "proxy", "mutant": "m3", "caught_by": ["p::b"], "status": "ran"}),
        json.dumps({"area": "moe", "baseline_tests": ["q::x"], "baseline_failures": []}),
        '{"area": "proxy", "mutant": "m4", "caught_by": ["p::c"',  # cut when the run was killed
    ]
    (tmp_path / "run.log").write_text("\n".join(log), encoding="utf-8")
    matrix = mm.join([tmp_path / "r.json", tmp_path / "run.log"])
    proxy = matrix["areas"]["proxy"]
    assert proxy["tests"] == {"p::a": ["m1"], "p::b": ["m3"], "p::c": [], "p::d": []}  # p::broken left out
    assert proxy["uncaught_tests"] == ["p::c", "p::d"] and (proxy["caught"], proxy["test_functions"]) == (2, 4)
    assert matrix["areas"]["moe"] == {
        "modes": ["log of a run"],
        "tests": {"q::x": []},
        "uncaught_tests": ["q::x"],
        "caught": 0,
        "test_functions": 1,
    }
    only_m1 = mm.join([tmp_path / "r.json", tmp_path / "run.log"], mutants={"m1"})["areas"]["proxy"]
    assert only_m1["uncaught_tests"] == ["p::b", "p::c", "p::d"]  # m3's catch is not counted


MATRIX = SCRIPT.parents[1] / "docs" / "bench" / "mutation-matrix-2026-12-07.json"
MATRIX_BEFORE = MATRIX.with_name("mutation-matrix-before-2026-12-07.json")


def test_committed_matrices_are_their_sources_joined(mm: ModuleType) -> None:
    """docs/bench's matrices re-join from the committed runs they list (before: the mutants at the branch's start)."""
    root = SCRIPT.parents[1]
    for path in (MATRIX, MATRIX_BEFORE):
        matrix = json.loads(path.read_text(encoding="utf-8"))
        names = None
        if "mutants" in matrix:
            listed = json.loads((root / matrix["mutants"]).read_text(encoding="utf-8"))
            names = {m["name"] for rows in listed.values() for m in rows}
        assert mm.join([root / s for s in matrix["sources"]], names)["areas"] == matrix["areas"], path.name


def test_mutations_doc_table_equals_the_matrices() -> None:
    """tests/MUTATIONS.md's per-area counts are the committed matrices'."""
    from tests.doc_tables import table_rows

    after = json.loads(MATRIX.read_text(encoding="utf-8"))["areas"]
    before = json.loads(MATRIX_BEFORE.read_text(encoding="utf-8"))["areas"]
    text = (SCRIPT.parents[1] / "tests" / "MUTATIONS.md").read_text(encoding="utf-8")
    rows = table_rows(text, "| area | test functions |")
    assert set(rows) == set(after)
    for area, cells in rows.items():
        want = [after[area]["test_functions"], before.get(area, {}).get("caught", 0), after[area]["caught"]]
        assert [int(c.strip("*")) for c in cells[:3]] == want, area
        uncaught = after[area]["uncaught_tests"]
        assert cells[3] == ("none" if not uncaught else str(len(uncaught))), area
