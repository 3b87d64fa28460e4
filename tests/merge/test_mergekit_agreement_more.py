"""Agreement with mergekit for nuslerp, karcher, sce, ram, ramplus_tl, nearswap and arcee_fusion.

Tiny fp32 models (base + Gaussian noise of 0.02), one mergekit subprocess for all recipes. Each
lmbricks recipe runs twice: whole tensors (the tiny tensors are below the executor's block size) and
through the chunked form with 64-element row blocks. The comparison is on the change each merge makes,
``out - ref`` with ``ref`` the base (or the first model for methods without one), with a tolerance of
a few fp32 roundings of the inputs' magnitude (``ULPS · 2^-23 · max|θ|``), which is checked to be far
below the size of that change: a mis-weighted or mis-masked merge fails.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from lmbricks.checkpoint import CheckpointReader
from lmbricks.merge import execute, load_recipe, merge, plan_merge

ROOT = Path(__file__).resolve().parents[2]
MERGEKIT_PY = ROOT / ".bench-venvs" / "mergekit" / "bin" / "python"
RUNNER = Path(__file__).with_name("mergekit_runner.py")

pytestmark = pytest.mark.skipif(
    not MERGEKIT_PY.exists(),
    reason=f"mergekit venv absent ({MERGEKIT_PY}); create it with `make mergekit-venv`",
)

#: fp32 roundings of max|θ| allowed between the two tools (measured: every method within 2; karcher
#: although mergekit iterates in fp32 on the whole tensors and lmbricks in float64 on their Gram matrix).
ULPS = 4
EPS32 = 2.0**-23


def _recipes(f: dict[str, Path]) -> dict[str, dict]:
    b, m1, m2, m3 = (str(f[k]) for k in ("base", "ft1", "ft2", "ft3"))
    return {
        "nuslerp": {
            "merge_method": "nuslerp",
            "base_model": b,
            "models": [{"model": m1, "parameters": {"weight": 0.3}}, {"model": m2, "parameters": {"weight": 0.7}}],
        },
        "nuslerp_rows_no_base": {
            "merge_method": "nuslerp",
            "models": [{"model": m1, "parameters": {"weight": 0.5}}, {"model": m2, "parameters": {"weight": 0.2}}],
            "parameters": {"nuslerp_flatten": False},
        },
        "nuslerp_columns": {
            "merge_method": "nuslerp",
            "base_model": b,
            "models": [{"model": m1, "parameters": {"weight": 0.6}}, {"model": m3, "parameters": {"weight": 0.4}}],
            "parameters": {"nuslerp_flatten": False, "nuslerp_row_wise": True},
        },
        "karcher": {"merge_method": "karcher", "models": [{"model": m1}, {"model": m2}, {"model": m3}]},
        "karcher_short": {
            "merge_method": "karcher",
            "models": [{"model": m1}, {"model": m2}],
            "parameters": {"max_iter": 2, "tol": 1e-7},
        },
        "sce": {"merge_method": "sce", "base_model": b, "models": [{"model": m1}, {"model": m2}, {"model": m3}]},
        "sce_topk": {
            "merge_method": "sce",
            "base_model": b,
            "models": [{"model": m1}, {"model": m2}, {"model": m3}],
            "parameters": {"select_topk": 0.3},
        },
        # epsilon 0.02 (the noise scale): about a third of each task vector contributes, so entries
        # are unique to one model, shared by two or three, or by none
        "ram": {
            "merge_method": "ram",
            "base_model": b,
            "models": [{"model": m1}, {"model": m2}, {"model": m3}],
            "parameters": {"epsilon": 0.02},
        },
        "ramplus_tl": {
            "merge_method": "ramplus_tl",
            "base_model": b,
            "models": [{"model": m1}, {"model": m2}],
            "parameters": {"epsilon": 0.02, "r": 0.5, "alpha": 0.8},
        },
        "nearswap": {
            "merge_method": "nearswap",
            "base_model": b,
            "models": [{"model": m1}],
            "parameters": {"t": 0.01},
        },
        "arcee_fusion": {"merge_method": "arcee_fusion", "base_model": b, "models": [{"model": m1}]},
    }


@pytest.fixture(scope="module")
def both(family: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, Path]]:
    """Name -> (lmbricks whole tensors, lmbricks in 64-element blocks, mergekit)."""
    root = tmp_path_factory.mktemp("agreement_more")
    jobs, outs = [], {}
    for name, recipe in _recipes(family).items():
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**recipe, "dtype": "float32"}))
        jobs.append([str(path), str(root / f"mk_{name}")])
        whole = merge(path, root / f"lb_{name}")
        blocks = execute(plan_merge(load_recipe(path), root / f"lbb_{name}"), root / f"lbb_{name}", block=64)
        outs[name] = (whole, blocks, root / f"mk_{name}")
    (root / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run(
        [str(MERGEKIT_PY), str(RUNNER), str(root / "jobs.json")], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return outs


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with CheckpointReader(path) as r:
        return {k: r.get(k).float().clone() for k in r}


@pytest.mark.parametrize("name", sorted(_recipes({k: Path(k) for k in ("base", "ft1", "ft2", "ft3")})))
def test_changes_agree_with_mergekit_to_fp32_rounding(both: dict, family: dict[str, Path], name: str) -> None:
    recipe = _recipes(family)[name]
    ref_key = "base" if "base_model" in recipe else "ft1"
    ref = _tensors(family[ref_key])
    inputs = [ref, *(_tensors(Path(m["model"])) for m in recipe["models"])]
    whole, blocks, theirs = (_tensors(p) for p in both[name])
    assert whole.keys() == theirs.keys() == blocks.keys()
    changed = 0
    for k in theirs:
        scale = max(float(t[k].abs().max()) for t in inputs)
        tol = ULPS * EPS32 * scale
        expected = theirs[k] - ref[k]
        size = float(expected.abs().max())
        if size > 0:
            assert tol < 1e-2 * size, (k, tol, size)  # the tolerance is far below the change checked
            changed += 1
        for ours in (whole, blocks):
            got = ours[k] - ref[k]
            err = float((got - expected).abs().max())
            assert err <= tol, f"{name} {k}: |Δ ours - Δ mergekit| = {err:.3g} > {tol:.3g} (change {size:.3g})"
    assert changed >= len(theirs) // 2, "most tensors must change for the comparison to mean anything"
