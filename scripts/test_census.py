"""Classify the suite's test functions as strong, error-path or smoke, by a rule read from the code.

Usage: python scripts/test_census.py [TESTS_DIR] [--by-dir] [--list smoke|strong|error-path] [--json]

The rule (static, on each ``test_*`` function's AST and on the functions of the same module it calls
or hands to a call, which count as part of it: a worker run in other processes by
``mp.spawn(_worker, ...)``, ``Process(target=_worker)`` or a thread or pool, asserts for the test):
- **strong**: it compares a value with an expected one: a call to ``assert_close``, ``allclose``,
  ``isclose``, ``equal`` (``torch.equal``), ``approx``, ``assert_allclose``,
  ``assert_array_equal``, ``gradcheck`` or ``gradgradcheck`` (``torch.autograd``'s comparison of
  analytic with numerical gradients), or an ``assert`` with ``==``, ``<``, ``<=``, ``>``, ``>=`` or ``!=``
  between two operands of which neither is a bare ``exit_code``/``returncode`` check against 0, a
  ``len(...)``, ``.exists()``, ``isinstance`` or a string/None/bool literal (those state a shape of the
  result, not its value).
- **error-path**: not strong, and it expects a failure: ``pytest.raises`` or ``pytest.warns``, or an
  ``exit_code``/``returncode`` compared with a non-zero number.
- **smoke**: everything else (files exist, keys present, membership, truthiness, no assertion).

A parametrised function counts once. The rule reads what a test asserts, not whether the assertion is
tight enough: a strong test may still tolerate a bug (tests/MUTATIONS.md records the ones checked).
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import Counter
from pathlib import Path

VALUE_CALLS = {
    "assert_close", "allclose", "isclose", "equal", "approx", "assert_allclose", "assert_array_equal", "gradcheck",
    "gradgradcheck",
}  # fmt: skip
ERROR_CALLS = {"raises", "warns"}
ORDER_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
STATUS_NAMES = {"exit_code", "returncode"}


def _name(node: ast.AST) -> str:
    """The last name of a call target or attribute (``torch.testing.assert_close`` -> ``assert_close``)."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _is_shape_operand(node: ast.AST) -> bool:
    """Operands that state the form of a result rather than its value."""
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, bool))):
        return True
    if isinstance(node, ast.Call) and _name(node.func) in {"len", "exists", "isinstance", "is_file", "is_dir"}:
        return True
    return isinstance(node, (ast.Attribute, ast.Name)) and _name(node) in STATUS_NAMES


def _status_failure(cmp: ast.Compare) -> bool:
    """``exit_code == 2`` or ``returncode != 0``: the test expects a failing command."""
    operands = [cmp.left, *cmp.comparators]
    has_status = any(_name(o) in STATUS_NAMES for o in operands)
    nonzero = any(isinstance(o, ast.Constant) and isinstance(o.value, int) and o.value != 0 for o in operands)
    negated = any(isinstance(op, ast.NotEq) for op in cmp.ops) and any(
        isinstance(o, ast.Constant) and o.value == 0 for o in operands
    )
    return has_status and (nonzero or negated)


Function = ast.FunctionDef | ast.AsyncFunctionDef


def _called(call: ast.Call) -> list[str]:
    """Names a call runs: its target, and the bare names it is handed (``spawn(_worker)``, ``target=_worker``)."""
    names = [call.func.id] if isinstance(call.func, ast.Name) else []
    args = [*call.args, *(k.value for k in call.keywords)]
    return names + [a.id for a in args if isinstance(a, ast.Name)]


def _own(fn: Function, helpers: dict[str, Function]) -> list[Function]:
    """``fn`` and the module-level functions it calls or hands to a call (a worker), transitively."""
    seen, todo = {fn.name: fn}, [fn]
    while todo:
        for node in ast.walk(todo.pop()):
            for name in _called(node) if isinstance(node, ast.Call) else []:
                if name in helpers and name not in seen:
                    seen[name] = helpers[name]
                    todo.append(helpers[name])
    return list(seen.values())


def classify(fn: Function, helpers: dict[str, Function] | None = None) -> str:
    """``strong``, ``error-path`` or ``smoke`` for one test function (see the module docstring).

    Args:
        fn: the test function.
        helpers: the module's top-level functions by name (their assertions count for ``fn``).
    """
    strong = error = False
    nodes = [n for f in _own(fn, helpers or {}) for n in ast.walk(f)]
    for node in nodes:
        if isinstance(node, ast.Call):
            name = _name(node.func)
            strong |= name in VALUE_CALLS
            error |= name in ERROR_CALLS
        elif isinstance(node, ast.Assert):
            for cmp in ast.walk(node.test):
                if not isinstance(cmp, ast.Compare):
                    continue
                if _status_failure(cmp):
                    error = True
                    continue
                operands = [cmp.left, *cmp.comparators]
                if any(isinstance(op, ORDER_OPS) for op in cmp.ops) and not any(map(_is_shape_operand, operands)):
                    strong = True
    return "strong" if strong else "error-path" if error else "smoke"


def census(root: Path) -> list[tuple[str, str, str]]:
    """``[(file, function, class)]`` for every ``test_*`` function under ``root``."""
    rows = []
    for path in sorted(root.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        helpers = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                rows.append((str(path.relative_to(root)), node.name, classify(node, helpers)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1] / "tests"))
    ap.add_argument("--by-dir", action="store_true", help="one line per test directory")
    ap.add_argument("--list", choices=("strong", "error-path", "smoke"), help="list the functions of one class")
    ap.add_argument("--json", action="store_true", help="the counts as JSON")
    args = ap.parse_args()
    rows = census(Path(args.root))
    total = Counter(c for _, _, c in rows)
    if args.json:
        print(json.dumps({"total": len(rows), **total}))
        return
    if args.list:
        for f, name, c in rows:
            if c == args.list:
                print(f"{f}::{name}")
        return
    if args.by_dir:
        dirs: dict[str, Counter[str]] = {}
        for f, _, c in rows:
            dirs.setdefault(f.split("/")[0] if "/" in f else ".", Counter())[c] += 1
        for d, cnt in sorted(dirs.items()):
            print(f"{d:14s} strong {cnt['strong']:4d}  error-path {cnt['error-path']:4d}  smoke {cnt['smoke']:4d}")
    n = len(rows)
    print(
        f"{n} test functions: strong {total['strong']} ({100 * total['strong'] / n:.0f}%), "
        f"error-path {total['error-path']} ({100 * total['error-path'] / n:.0f}%), "
        f"smoke {total['smoke']} ({100 * total['smoke'] / n:.0f}%)"
    )


if __name__ == "__main__":
    main()
