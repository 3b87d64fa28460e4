"""Benchmarks that measure the code, not the process's history: one fresh process per timed workload.

A benchmark names its workloads as functions of its own script (``Workload``: the script, the
function, its keyword arguments, extra environment). :func:`alternate` runs each workload in a new
process, several rounds, the order rotating every round so that drifts of the machine's load fall
on all sides alike; :func:`medians` reduces a key of the results.

The processes are forked from a *zygote*: a Python process started once per run that imports the
heavy modules (torch, transformers, the script) and then only forks, one child per workload. A
child has the heap the imports left and nothing else; no workload ever ran before it, and both
sides start from the same state, at a fraction of the cost of a new interpreter (importing
transformers takes seconds). Each child applies its workload's ``env``, then calls
``lmbricks.tune_process()`` (so every side gets the same allocator setting;
``LMBRICKS_TUNE_ALLOCATOR=0`` in ``env`` gives the default-allocator figure), then calls the
function, which returns a JSON-able dict; it comes back with the allocator tuning under
``"allocator"``. ``LD_PRELOAD`` (another allocator) only acts when a process starts, so workloads
that set it get a zygote of their own, started with it.

Usage inside a benchmark::

    from harness import Workload, alternate, medians   # bench/ is on sys.path for its scripts
    runs = alternate({"lmbricks": Workload(__file__, "step", {"side": "lmbricks"}), ...}, rounds=5)
    seconds = medians(runs, "seconds")

Timing inside a workload: :func:`time_calls` gives the median wall time and the median process CPU
time of repeated calls; a benchmark's ``--clock`` (:data:`CLOCKS`) picks which of the two its ratios
use (``cpu``: for a machine shared with other work, with one torch thread), and bench/machine.py
measures the limits with both clocks so that utilisation divides like by like.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

#: ``--clock`` choices and the result key each one reads: wall time, or the process's own CPU time
#: (user + system, page faults included; other processes on the same cores hardly change it).
CLOCKS = {"wall": "seconds", "cpu": "cpu_seconds"}

#: Imported by every zygote before it forks (the scripts' own imports come on top).
PRELOAD = ("torch", "transformers", "lmbricks.runtime")


@dataclass(frozen=True)
class Workload:
    """A function of a benchmark script, run alone in a fresh process.

    Attributes:
        script: the path of the script that defines ``function``.
        function: its name; it takes ``kwargs`` and returns a JSON-able dict.
        kwargs: JSON-able keyword arguments.
        env: environment variables set for the process on top of this one's.
    """

    script: str
    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


class Zygote:
    """A process that imports once and forks a fresh child per workload (see the module docstring).

    Args:
        scripts: benchmark scripts to import before forking (their module-level imports included).
        preload: an ``LD_PRELOAD`` value for the zygote and so for all its children ("" for none).
    """

    def __init__(self, scripts: list[str], preload: str = "") -> None:
        env = {**os.environ, "LD_PRELOAD": preload} if preload else dict(os.environ)
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--zygote", json.dumps(scripts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def run(self, workload: Workload) -> dict[str, Any]:
        """Fork a child that runs ``workload``; wait for it and return its result.

        Raises:
            RuntimeError: the child failed (its traceback went to stderr).
        """
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(asdict(workload)) + "\n")
        self._proc.stdin.flush()
        reply = json.loads(self._proc.stdout.readline() or '{"error": "the zygote died"}')
        if "error" in reply:
            raise RuntimeError(f"{workload.function}({workload.kwargs}) failed: {reply['error']}")
        return dict(reply)

    def close(self) -> None:
        """End the zygote (it exits when its input closes)."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait()


def alternate(workloads: Mapping[str, Workload], rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Run every workload once per round, each in its own fresh process, rotating who goes first.

    Args:
        workloads: by name (``"lmbricks"``, ``"hf"``, ...).
        rounds: how many processes per workload.

    Returns:
        The results of each workload's processes, in round order.
    """
    names = list(workloads)
    scripts = sorted({str(Path(w.script).resolve()) for w in workloads.values()})
    zygotes: dict[str, Zygote] = {}
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    try:
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                preload = workloads[name].env.get("LD_PRELOAD", "")
                zygote = zygotes.get(preload) or zygotes.setdefault(preload, Zygote(scripts, preload))
                runs[name].append(zygote.run(workloads[name]))
    finally:
        for zygote in zygotes.values():
            zygote.close()
    return runs


def medians(runs: Mapping[str, list[dict[str, Any]]], key: str) -> dict[str, float]:
    """The median of ``key`` over each workload's results.

    Args:
        runs: as :func:`alternate` returns them.
        key: a numeric key of the results.

    Returns:
        ``{name: median}``.
    """
    return {name: statistics.median(r[key] for r in results) for name, results in runs.items()}


def time_calls(
    fn: Callable[[], object], reps: int, warmup: int, sync: Callable[[], object] | None = None
) -> dict[str, float]:
    """Median wall and process-CPU seconds of ``reps`` calls of ``fn`` after ``warmup`` untimed ones.

    Args:
        fn: the call to time.
        reps: timed calls (at least 1).
        warmup: untimed calls first.
        sync: called before each clock reading (``torch.cuda.synchronize`` on a GPU).

    Returns:
        ``{"seconds": median wall time, "cpu_seconds": median process CPU time}`` (the keys of
        :data:`CLOCKS`).
    """
    wait = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(max(reps, 1)):
        wait()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wait()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"seconds": statistics.median(walls), "cpu_seconds": statistics.median(cpus)}


def _load(script: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{Path(script).stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _child(request: dict[str, Any], modules: dict[str, Any], out: IO[str]) -> None:
    from lmbricks.runtime import tune_process

    os.environ.update(request["env"])
    tuning = tune_process()  # first, as every lmbricks process does (LMBRICKS_TUNE_ALLOCATOR=0 opts out)
    result = dict(getattr(modules[request["script"]], request["function"])(**request["kwargs"]))
    result["allocator"] = {"applied": tuning.applied, "allocator": tuning.allocator, "reason": tuning.reason}
    out.write(json.dumps(result))


def _zygote(scripts: list[str]) -> None:
    import importlib
    import traceback

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts import each other from bench/
    for name in PRELOAD:
        importlib.import_module(name)
    modules = {s: _load(s) for s in scripts}
    for line in sys.stdin:
        request = json.loads(line)
        request["script"] = str(Path(request["script"]).resolve())
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a fresh process for one workload
            os.close(read_fd)
            os.dup2(2, 1)  # the workload's prints go to stderr; stdout is the zygote's reply channel
            code = 0
            with os.fdopen(write_fd, "w") as out:
                try:
                    _child(request, modules, out)
                except BaseException as exc:  # report any failure to the parent, never run on
                    traceback.print_exc()
                    out.write(json.dumps({"error": repr(exc)}))
                    code = 1
            os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd) as result:
            reply = result.read()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write((reply or json.dumps({"error": f"child exited with status {status}"})) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _zygote(json.loads(sys.argv[2]))
