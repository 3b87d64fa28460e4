"""Measure the source tree's shape: sizes, long functions, duplicated CLI bulk, import direction.

The rooms of ``src/lmbricks`` are ranked from the lowest (``errors``) to the highest (``cli``); a
module may import its own room and any room ranked below it, never one above. docs/architecture.md
draws the same order and ``tests/test_layout.py`` enforces it with :func:`import_violations`.

Usage::

    python scripts/code_metrics.py            # a summary table
    python scripts/code_metrics.py --json     # the same as JSON (for closing notes and CI logs)
"""

from __future__ import annotations

import argparse
import ast
import json
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lmbricks"

#: Rooms from lowest to highest. A room may import only itself and rooms earlier in this list.
ROOMS: tuple[str, ...] = (
    "errors",
    "version",
    "paths",
    "config",
    "threads",
    "runtime",
    "report",
    "checkpoint",
    "hub",
    "data",
    "moe",
    "nn",
    "testing",
    "analysis",
    "moefy",
    "sft",
    "eval",
    "merge",
    "tokens",
    "average",
    "adapters",
    "proxy",
    "grow",
    "reward",
    "train",
    "sparsify",
    "trace",
    "align",
    "plugins",
    "tour",
    "cli",
)
#: The package root (``lmbricks/__init__.py``) is the public facade: it may import any room, and only
#: the top rooms may import it (low rooms import a name from the module that defines it).
ROOT = "<root>"
ROOT_IMPORTERS = frozenset({"tour", "cli"})


@dataclass(frozen=True)
class Violation:
    """``module`` (in room ``room``) imports ``target`` (room ``target_room``) against the order."""

    module: str
    line: int
    room: str
    target: str
    target_room: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: room {self.room!r} imports {self.target} (room {self.target_room!r})"


def room_of(path: Path, src: Path = SRC) -> str:
    """The room of a source file: its top-level package or module under ``lmbricks/``."""
    rel = path.relative_to(src)
    if rel.parts == ("__init__.py",):
        return ROOT
    return rel.parts[0].removesuffix(".py")


def _imported_modules(path: Path, tree: ast.Module, src: Path) -> list[tuple[int, str]]:
    """Absolute dotted names of the lmbricks modules ``tree`` imports, with their line numbers."""
    rel = path.relative_to(src)
    package = ["lmbricks", *rel.parts[:-1]]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "lmbricks"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] != "lmbricks":
                continue
            if module == "lmbricks":  # `from lmbricks import x`: x may be a submodule or a root name
                found += [(node.lineno, f"lmbricks.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, module))
    return found


def _target_room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return ROOT
    name = parts[1]
    if name in ROOMS:
        return name
    return ROOT  # a name defined in lmbricks/__init__.py (load_model, __version__)


def import_violations(src: Path = SRC) -> list[Violation]:
    """Every import of a higher room, or of the package root from a room that may not import it."""
    rank = {room: i for i, room in enumerate(ROOMS)}
    out: list[Violation] = []
    for path in sorted(src.rglob("*.py")):
        room = room_of(path, src)
        if room == ROOT:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, module in _imported_modules(path, tree, src):
            target = _target_room(module)
            if target == room:
                continue
            bad = room not in ROOT_IMPORTERS if target == ROOT else rank.get(target, -1) > rank.get(room, -1)
            if room not in rank:
                bad = True
            if bad:
                out.append(Violation(str(path.relative_to(src.parent)), line, room, module, target))
    return out


def function_lengths(src: Path = SRC) -> list[tuple[int, str]]:
    """(lines, "file:qualified name") for every function and method, docstring included, longest first."""
    out: list[tuple[int, str]] = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(src)

        def visit(node: ast.AST, prefix: str, rel: Path = rel) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = f"{prefix}{child.name}"
                    out.append((child.end_lineno - child.lineno + 1, f"{rel}:{name}"))  # type: ignore[operator]
                    visit(child, f"{name}.", rel)
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.", rel)

        visit(tree, "")
    return sorted(out, key=lambda item: (-item[0], item[1]))


def file_lengths(src: Path = SRC) -> list[tuple[int, str]]:
    """(lines, file) for every source file, longest first."""
    rows = [(len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(src))) for p in src.rglob("*.py")]
    return sorted(rows, key=lambda item: (-item[0], item[1]))


def measure(src: Path = SRC) -> dict[str, object]:
    """The figures the layout issue tracks, as one JSON-ready dict."""
    files = file_lengths(src)
    functions = function_lengths(src)
    cli = [(n, f) for n, f in files if f.startswith("cli/")]
    return {
        "lines": sum(n for n, _ in files),
        "files": len(files),
        "files_over_400": [f"{f} ({n})" for n, f in files if n > 400],
        "functions_over_100": [f"{f} ({n})" for n, f in functions if n > 100],
        "functions_over_60": sum(1 for n, _ in functions if n > 60),
        "longest_functions": [f"{f} ({n})" for n, f in functions[:15]],
        "cli_modules_over_150": [f"{f} ({n})" for n, f in cli if n > 150],
        "import_violations": [str(v) for v in import_violations(src)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    figures = measure()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        if isinstance(value, list):
            print(f"{key}: {len(value)}")
            for item in value:
                print(f"  {item}")
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
