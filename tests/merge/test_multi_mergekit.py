"""The same recipe graph through ``mergekit-multi`` and ``lmbricks merge multi``: the outputs agree.

Needs mergekit in its own virtual environment (``.bench-venvs/mergekit``); skipped with the reason
otherwise. The graph is test_multi.py's (linear -> ties -> slerp), in fp32, its last recipe unnamed
(mergekit's ``--out-path``, lmbricks' ``--out``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from test_multi import _graph

from lmbricks.checkpoint import CheckpointReader
from lmbricks.merge.multi import MultiConfig, run_graph

ROOT = Path(__file__).resolve().parents[2]
MERGEKIT_MULTI = ROOT / ".bench-venvs" / "mergekit" / "bin" / "mergekit-multi"
EPS32 = torch.finfo(torch.float32).eps

pytestmark = pytest.mark.skipif(
    not MERGEKIT_MULTI.exists(),
    reason=f"mergekit venv absent ({MERGEKIT_MULTI}); create it with `make mergekit-venv`",
)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with CheckpointReader(path) as r:
        return {k: r.get(k).float().clone() for k in r}


def test_graph_agrees_with_mergekit_multi(family: dict[str, Path], tmp_path: Path) -> None:
    docs = [{**d, "dtype": "float32"} for d in _graph(family)]
    del docs[0]["name"]  # the final merge: --out-path / --out
    graph = tmp_path / "graph.yaml"
    graph.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    proc = subprocess.run(
        [str(MERGEKIT_MULTI), str(graph), "-I", str(tmp_path / "mk"), "--out-path", str(tmp_path / "mk_final")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = run_graph(MultiConfig(graph=graph, out_dir=tmp_path / "lb", final_out=tmp_path / "lb_final"))
    assert [s.name for s in result.steps] == ["avg", "tied", None]
    base = _tensors(family["base"])
    inputs = [_tensors(family[k]) for k in ("base", "ft1", "ft2", "ft3")]
    for ours_dir, theirs_dir in [
        (tmp_path / "lb" / "avg", tmp_path / "mk" / "avg"),
        (tmp_path / "lb" / "tied", tmp_path / "mk" / "tied"),
        (tmp_path / "lb_final", tmp_path / "mk_final"),
    ]:
        ours, theirs = _tensors(ours_dir), _tensors(theirs_dir)
        assert ours.keys() == theirs.keys()
        moved = 0
        for k in theirs:  # the bound of test_mergekit_agreement.py, on the change from the base
            mine, want = ours[k] - base[k], theirs[k] - base[k]
            scale = torch.stack([t[k].abs() for t in inputs]).amax(0)
            bound = 8 * EPS32 * torch.maximum(scale, theirs[k].abs()) + 1e-4 * want.abs()
            assert float(((mine - want).abs() - bound).max()) <= 0, (ours_dir.name, k)
            moved += int(want.abs().max() > 1e-3)
        assert moved > len(theirs) // 2, ours_dir.name
