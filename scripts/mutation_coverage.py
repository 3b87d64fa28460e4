"""Per-test mutation coverage: which test functions catch at least one of a listed set of planted bugs.

Usage: python scripts/mutation_coverage.py AREA [AREA ...] [--full | --kill] [--budget-cpu-s N] [--only NAME ...]
       [--tests PATH ...] [--json OUT] [--check]

Each mutant in ``scripts/mutants.json`` is one textual change to one library file (an operator
swapped, a term dropped, a slice off by one, a flag ignored), written as the exact source it
replaces, so the list breaks loudly (``--check``, and ``tests/test_mutation_coverage.py``) when the
code moves. For
an AREA (``proxy``, ``moe``, ``merge``, ``moefy``, ``adapters``; ``moe-parallel`` and ``train-parallel``
for the multi-process expert-parallel tests) the script copies ``src/`` once to
a temporary directory, runs the
area's tests there unmodified (the baseline: a test failing there is left out), then for each
mutant writes the changed file into the copy, runs the tests with ``PYTHONPATH`` pointing at the
copy (one thread, ``-m "not integration"``, no bytecode cache, per-test outcomes read from pytest's
JUnit XML) and restores the file. A test *catches* a mutant when it fails or errors on it; a
parametrised test counts once (it catches if any of its cases does). The tree itself is never
modified.

By default each mutant runs only the tests that have caught nothing yet (the question is "does every
test catch at least one mutant", and that is far cheaper); ``--full`` runs every test against every
mutant (the whole matrix); ``--kill`` asks the other question, "does the area's suite kill each
mutant": every test of the area runs with ``-x`` (the baseline's failures deselected), so a killed
mutant stops at its first failing test (``caught_by`` names it) and the report's ``killed`` counts
the mutants some test failed on. ``--tests PATH ...`` runs those test paths instead of the area's
(with ``--kill --only``: do a branch's new test files kill the mutants that survived?). The CPU time
of the test processes is counted (``getrusage`` of the children) and no mutant starts once
``--budget-cpu-s`` is spent. Prints (and with ``--json`` writes)
``{"areas": {area: {"tests": {test: [mutants caught]}, "uncaught_tests": [...], "mutants": {name:
{"caught_by": [...], "cpu_s": ..., "status": ...}}, "cpu_s": ...}}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """One planted bug: ``old`` (exactly once in ``path``, relative to src/lmbricks) becomes ``new``."""

    name: str
    path: str
    old: str
    new: str


#: pytest arguments of each area; the expert-parallel tests (multi-process, 190 of tests/moe's 193 s) are their own
AREAS: dict[str, tuple[str, ...]] = {
    "proxy": ("tests/proxy",),
    "moe": ("tests/moe", "--ignore=tests/moe/test_expert_parallel.py"),
    "moe-parallel": ("tests/moe/test_expert_parallel.py",),
    # the training loop's expert-parallel layout under torchrun (tests/train: its expert-parallel cases)
    "train-parallel": ("tests/train/test_distributed_layouts.py", "-k", "experts"),
    "merge": ("tests/merge",),
    "moefy": ("tests/moefy",),
    "adapters": ("tests/adapters",),
}
MUTANTS_FILE = ROOT / "scripts" / "mutants.json"


def load_mutants(path: Path = MUTANTS_FILE) -> dict[str, list[Mutant]]:
    """``{area: [Mutant]}`` from the JSON list (``{area: [{name, path, old, new}]}``)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {area: [Mutant(**m) for m in rows] for area, rows in raw.items()}


def check_mutants(mutants: list[Mutant], src: Path = ROOT / "src" / "lmbricks") -> list[str]:
    """Problems of a mutant list against the tree: a missing file, ``old`` not exactly once, a no-op, a name twice."""
    problems, names = [], set()
    for m in mutants:
        file = src / m.path
        if m.name in names:
            problems.append(f"{m.name}: the name is used twice")
        names.add(m.name)
        if not file.is_file():
            problems.append(f"{m.name}: no file {m.path}")
            continue
        count = file.read_text(encoding="utf-8").count(m.old)
        if count != 1:
            problems.append(f"{m.name}: {m.old!r} occurs {count} times in {m.path} (want exactly once)")
        if m.old == m.new:
            problems.append(f"{m.name}: old and new are the same")
    return problems


def _outcomes(junit: Path) -> dict[str, bool]:
    """``{file::function: failed}`` from pytest's JUnit XML; a parametrised function fails if any case does."""
    out: dict[str, bool] = {}
    if not junit.is_file():
        return out
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        name = case.get("name", "").split("[")[0]
        # classname is the dotted module (and class, if any): tests.proxy.test_decode[.TestX]
        parts = [p for p in module if p]
        file_parts = parts[: next((i + 1 for i, p in enumerate(parts) if p.startswith("test_")), len(parts))]
        key = "/".join(file_parts) + ".py::" + name
        failed = any(child.tag in ("failure", "error") for child in case)
        if any(child.tag == "skipped" for child in case):
            out.setdefault(key, False)
            continue
        out[key] = out.get(key, False) or failed
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_limit(seconds: float | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` capping the pytest process's CPU time (each spawned worker gets its own cap)."""
    if seconds is None:
        return None
    soft = int(seconds) + 1

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 10))

    return apply


def _pytest(
    copy: Path,
    tests: list[str],
    junit: Path,
    timeout: float,
    first_failure: tuple[str, ...] | None = None,
    cpu_limit: float | None = None,
) -> tuple[dict[str, bool], float, float, str]:
    """Run ``tests`` against the library in ``copy``: (outcomes, CPU seconds, wall seconds, status).

    With ``first_failure`` (the node ids to deselect: the baseline's failures) pytest stops at the
    first failing test (``-x``). A run past ``timeout`` (wall) is killed: status ``timeout``, no
    outcomes (a hang is no test's catch). ``cpu_limit`` caps the run's CPU seconds (``RLIMIT_CPU``):
    on a loaded shared machine wall time says little, so a mutant that spins is stopped by its CPU
    (status ``cpu limit``, no outcomes) and the wall timeout only catches a run that waits for ever.
    """
    env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not integration"]
    if first_failure is not None:
        cmd += ["-x", *(f"--deselect={t}" for t in first_failure)]
    # pytest's temporary directories inside the work directory: under the default /tmp/pytest-of-USER
    # runs side by side on one machine delete each other's (pytest keeps the last three)
    cmd += ["-o", "addopts=", f"--basetemp={junit.with_suffix('.tmp')}", f"--junitxml={junit}", *tests]
    junit.unlink(missing_ok=True)  # never read the previous run's outcomes
    before, start = _children_cpu(), time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=_cpu_limit(cpu_limit)
        )
        killed = proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL)
        status = "ran" if proc.returncode in (0, 1) else "cpu limit" if killed else f"pytest exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        status = "timeout"
    outcomes = _outcomes(junit) if status not in ("timeout", "cpu limit") else {}  # a hang is no catch
    return outcomes, _children_cpu() - before, time.monotonic() - start, status


def _selection(tests: dict[str, list[str]], full: bool, dirs: tuple[str, ...]) -> list[str]:
    """The node ids to run: every test (``full``), else those that have caught nothing yet."""
    if full:
        return list(dirs)
    return sorted(t for t, caught in tests.items() if not caught)


def run_area(
    area: str,
    mutants: list[Mutant],
    full: bool,
    budget: float,
    work: Path,
    kill: bool = False,
    tests_only: tuple[str, ...] | None = None,
) -> dict[str, object]:
    """Baseline, then every mutant of ``area`` (see the module docstring). Returns the area's report.

    ``tests_only`` replaces the area's pytest arguments (e.g. only the test files a branch added).
    """
    dirs = tests_only or AREAS[area]
    copy = work / "src"
    if not copy.exists():
        shutil.copytree(ROOT / "src", copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    base, cpu, wall, status = _pytest(copy, list(dirs), work / f"{area}-baseline.xml", timeout=3600)
    if status != "ran" or not base:
        raise SystemExit(f"{area}: the baseline did not run ({status})")
    tests: dict[str, list[str]] = {t: [] for t, failed in base.items() if not failed}
    failures = sorted(t for t, f in base.items() if f)
    report: dict[str, object] = {"baseline_failures": failures}
    # on stderr, like each mutant's line below: a run stopped early still names every test it had
    print(json.dumps({"area": area, "baseline_tests": sorted(tests), "baseline_failures": failures}), file=sys.stderr)
    report["baseline_cpu_s"] = round(cpu, 1)
    # a mutant's run may spend 3x the baseline's CPU; wall time only catches a run that waits for ever
    # (the machine is shared and its load moves: 4x the baseline's wall was too short at load 16)
    spent, timeout, cpu_cap = cpu, max(1800.0, 10 * wall), max(120.0, 3 * cpu)
    results: dict[str, dict[str, object]] = {}
    deselect = tuple(failures) if kill else None
    for m in mutants:
        todo = list(dirs) if kill else _selection(tests, full, dirs)
        if not todo or spent > budget:
            results[m.name] = {"status": "not run (budget)" if todo else "not run (every test caught one)"}
            continue
        file = copy / "lmbricks" / m.path
        original = file.read_text(encoding="utf-8")
        file.write_text(original.replace(m.old, m.new, 1), encoding="utf-8")
        try:
            out, cpu, _wall, status = _pytest(copy, todo, work / f"{area}-mutant.xml", timeout, deselect, cpu_cap)
        finally:
            file.write_text(original, encoding="utf-8")
        caught = sorted(t for t, failed in out.items() if failed and t in tests)
        for t in caught:
            tests[t].append(m.name)
        spent += cpu
        results[m.name] = {"caught_by": caught, "tests_run": len(todo), "cpu_s": round(cpu, 1), "status": status}
        # one JSON line per mutant on stderr: a run stopped early still leaves what it found
        print(json.dumps({"area": area, "mutant": m.name, **results[m.name]}), file=sys.stderr, flush=True)
    ran = [r for r in results.values() if "caught_by" in r]
    report |= {
        "mode": "kill (-x)" if kill else "full" if full else "until each test caught one",
        "killed": sum(bool(r["caught_by"]) for r in ran),
        "mutants_run": len(ran),
        "tests": tests,
        "uncaught_tests": sorted(t for t, caught in tests.items() if not caught),
        "mutants": results,
        "cpu_s": round(spent, 1),
    }
    return report


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("areas", nargs="+", choices=sorted(AREAS))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="every test against every mutant (the whole matrix)")
    mode.add_argument("--kill", action="store_true", help="whether the area's suite kills each mutant (pytest -x)")
    ap.add_argument("--budget-cpu-s", type=float, default=900.0, help="no mutant starts past this CPU time, per area")
    ap.add_argument("--only", nargs="*", default=None, help="run only the mutants with these names")
    ap.add_argument("--tests", nargs="*", default=None, help="run these test paths instead of the area's")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    ap.add_argument("--check", action="store_true", help="only check that every mutant applies to the tree")
    args = ap.parse_args(argv)
    mutants = load_mutants()
    problems = [p for a in args.areas for p in check_mutants(mutants.get(a, []))]
    if problems:
        raise SystemExit("mutants that do not apply:\n" + "\n".join(problems))
    if args.check:
        print(f"{sum(len(mutants.get(a, [])) for a in args.areas)} mutants apply")
        return {}
    report: dict[str, object] = {
        "command": shlex.join(["python", "scripts/mutation_coverage.py", *(argv or sys.argv[1:])])
    }
    areas = {}
    with tempfile.TemporaryDirectory(prefix="lmbricks-mutants-") as tmp:
        for area in args.areas:
            chosen = [m for m in mutants.get(area, []) if args.only is None or m.name in args.only]
            tests_only = tuple(args.tests) if args.tests else None
            areas[area] = run_area(area, chosen, args.full, args.budget_cpu_s, Path(tmp), args.kill, tests_only)
    report["areas"] = areas
    text = json.dumps(report, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
