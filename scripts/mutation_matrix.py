"""The per-test mutation matrix of several runs of ``scripts/mutation_coverage.py``, joined.

Usage: python scripts/mutation_matrix.py SOURCE [SOURCE ...] [--mutants MUTANTS_JSON] [--json OUT]

A SOURCE is either a report that ``mutation_coverage.py --json`` wrote, or the stderr log of a run
(one JSON line for the baseline's tests, one per mutant): a run stopped before its end still
counts with what it found. For each area the matrix lists every test function of the baselines
with the mutants it failed on (the union over the sources: a test catches if any run saw it fail on
a mutant; with ``--mutants``, only on a mutant of that list, e.g. an older ``scripts/mutants.json``),
the tests that caught none, and the count. Runs in ``--kill`` mode stop at a mutant's first failing
test, so they show fewer catches than a test has; the matrix is a lower bound.
Prints (and with ``--json`` writes) ``{"sources": [...], "areas": {area: {"tests": {test:
[mutants]}, "uncaught_tests": [...], "caught": n, "test_functions": n, "modes": [...]}}}``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def _records(path: Path) -> list[dict[str, Any]]:
    """The per-area records of one source: a report's areas, or a log's JSON lines (other lines skipped)."""
    text = path.read_text(encoding="utf-8")
    try:
        report = json.loads(text)
    except json.JSONDecodeError:
        report = None
    if isinstance(report, dict) and "areas" in report:
        rows: list[dict[str, Any]] = []
        for area, r in report["areas"].items():
            if "tests" in r:  # (a report joined by hand may list its mutants only)
                base = {"baseline_tests": sorted(r["tests"]), "baseline_failures": r.get("baseline_failures", [])}
                rows.append({"area": area, **base, "mode": r.get("mode", "?")})
            rows += [{"area": area, "mutant": m, **v} for m, v in r["mutants"].items() if "caught_by" in v]
        return rows
    rows = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a killed run
    return [r for r in rows if "area" in r]


def join(sources: list[Path], mutants: set[str] | None = None) -> dict[str, Any]:
    """The joined matrix of ``sources`` (see the module docstring); with ``mutants``, only their catches count."""
    tests: dict[str, dict[str, set[str]]] = defaultdict(dict)
    failing: dict[str, set[str]] = defaultdict(set)
    modes: dict[str, set[str]] = defaultdict(set)
    for src in sources:
        for row in _records(src):
            area = str(row["area"])
            if "baseline_tests" in row:
                for t in row["baseline_tests"]:
                    tests[area].setdefault(t, set())
                failing[area] |= set(row["baseline_failures"])
                modes[area].add(row.get("mode", "log of a run"))
            elif mutants is None or row["mutant"] in mutants:
                for t in row.get("caught_by", []):
                    tests[area].setdefault(t, set()).add(str(row["mutant"]))
    areas = {}
    for area, found in sorted(tests.items()):
        found = {t: m for t, m in found.items() if t not in failing[area]}
        uncaught = sorted(t for t, m in found.items() if not m)
        areas[area] = {
            "tests": {t: sorted(m) for t, m in sorted(found.items())},
            "uncaught_tests": uncaught,
            "caught": len(found) - len(uncaught),
            "test_functions": len(found),
            "modes": sorted(modes[area]),  # "kill (-x)": a lower bound (a mutant stops at its first failing test)
        }
    return {"sources": [str(s) for s in sources], "areas": areas}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None, help="also write the matrix here")
    ap.add_argument("--mutants", type=Path, default=None, help="count only the mutants of this mutants.json")
    args = ap.parse_args(argv)
    names = None
    if args.mutants is not None:
        names = {m["name"] for rows in json.loads(args.mutants.read_text(encoding="utf-8")).values() for m in rows}
    matrix = join(args.sources, names)
    if args.mutants is not None:
        matrix["mutants"] = str(args.mutants)
    text = json.dumps(matrix, indent=1)
    print(text)
    for area, r in matrix["areas"].items():
        print(f"{area}: {r['caught']} of {r['test_functions']} test functions catch a mutant")
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return matrix


if __name__ == "__main__":
    main()
