"""Agreement with mergekit on tiny models, for every shared method and for gradient/filter parameters.

Needs mergekit in its own virtual environment (``.bench-venvs/mergekit``, created by
``make mergekit-venv``); skipped with the reason otherwise. All mergekit runs happen in one
subprocess (its import alone takes ~10 s).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from lmbricks.checkpoint import CheckpointReader
from lmbricks.merge import merge

ROOT = Path(__file__).resolve().parents[2]
MERGEKIT_PY = ROOT / ".bench-venvs" / "mergekit" / "bin" / "python"
RUNNER = Path(__file__).with_name("mergekit_runner.py")

pytestmark = pytest.mark.skipif(
    not MERGEKIT_PY.exists(),
    reason=f"mergekit venv absent ({MERGEKIT_PY}); create it with `make mergekit-venv`",
)


def _recipes(f: dict[str, Path]) -> dict[str, dict]:
    b, m1, m2, m3 = (str(f[k]) for k in ("base", "ft1", "ft2", "ft3"))
    grad_t = [
        {"filter": "self_attn", "value": [0.0, 0.5, 0.3, 0.7, 1.0]},
        {"filter": "mlp", "value": [1.0, 0.5, 0.7, 0.3, 0.0]},
        {"value": 0.5},
    ]
    return {
        "linear": {
            "merge_method": "linear",
            "models": [
                {"model": m1, "parameters": {"weight": 0.4}},
                {"model": m2, "parameters": {"weight": 0.3}},
                {"model": m3, "parameters": {"weight": 0.3}},
            ],
        },
        "linear_filter": {
            "merge_method": "linear",
            "models": [
                {"model": m1, "parameters": {"weight": [{"filter": "mlp", "value": 0.8}, {"value": 0.2}]}},
                {"model": m2, "parameters": {"weight": [0.1, 0.9]}},
            ],
            "parameters": {"normalize": True},
        },
        "task_arithmetic": {
            "merge_method": "task_arithmetic",
            "base_model": b,
            "models": [
                {"model": m1, "parameters": {"weight": 0.7}},
                {"model": m2, "parameters": {"weight": [0.2, 0.9]}},
            ],
            "parameters": {"lambda": 0.8},
        },
        "ties": {
            "merge_method": "ties",
            "base_model": b,
            "models": [
                {"model": m1, "parameters": {"weight": 0.5, "density": [1.0, 0.5, 0.3]}},
                {"model": m2, "parameters": {"weight": 0.5, "density": 0.5}},
            ],
            "parameters": {"int8_mask": True},
        },
        "ties_unnormalized": {
            "merge_method": "ties",
            "base_model": b,
            "models": [
                {"model": m1, "parameters": {"weight": 0.6, "density": 0.4}},
                {"model": m2, "parameters": {"weight": 0.3, "density": 0.7}},
                {"model": m3, "parameters": {"weight": 0.4, "density": 0.5}},
            ],
            "parameters": {"normalize": False, "lambda": 1.2},
        },
        "breadcrumbs": {
            "merge_method": "breadcrumbs",
            "base_model": b,
            "models": [
                {"model": m1, "parameters": {"weight": 0.5, "density": 0.6, "gamma": 0.1}},
                {"model": m2, "parameters": {"weight": 0.5, "density": 0.6, "gamma": 0.05}},
            ],
        },
        "breadcrumbs_ties": {
            "merge_method": "breadcrumbs_ties",
            "base_model": b,
            "models": [
                {"model": m1, "parameters": {"weight": 0.5, "density": 0.7}},
                {"model": m2, "parameters": {"weight": 0.5, "density": 0.5}},
            ],
        },
        "dare_linear_d1": {
            "merge_method": "dare_linear",
            "base_model": b,
            "models": [
                {"model": m1, "parameters": {"weight": 0.5, "density": 1.0}},
                {"model": m2, "parameters": {"weight": 0.5, "density": 1.0}},
            ],
        },
        "dare_linear": {
            "merge_method": "dare_linear",
            "base_model": b,
            "models": [{"model": m1, "parameters": {"weight": 1.0, "density": 0.5}}],
        },
        "della_linear": {
            "merge_method": "della_linear",
            "base_model": b,
            "models": [{"model": m1, "parameters": {"weight": 1.0, "density": 0.5, "epsilon": 0.1}}],
        },
        "slerp": {
            "merge_method": "slerp",
            "base_model": b,
            "models": [{"model": b}, {"model": m1}],
            "parameters": {"t": grad_t},
        },
        "multislerp": {
            "merge_method": "multislerp",
            "base_model": b,
            "models": [
                {"model": m1, "parameters": {"weight": 0.5}},
                {"model": m2, "parameters": {"weight": 0.3}},
                {"model": m3, "parameters": {"weight": 0.2}},
            ],
        },
        "model_stock": {
            "merge_method": "model_stock",
            "base_model": b,
            "models": [{"model": m1}, {"model": m2}, {"model": m3}],
        },
        "passthrough": {
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": m1, "layer_range": [0, 3]}]},
                {"sources": [{"model": m2, "layer_range": [1, 4]}]},
            ],
        },
    }


@pytest.fixture(scope="module")
def both(family: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("agreement")
    jobs = []
    outs = {}
    for name, recipe in _recipes(family).items():
        recipe = {**recipe, "dtype": "float32"}
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        jobs.append([str(path), str(root / f"mk_{name}")])
        ours = merge(path, root / f"lb_{name}")
        outs[name] = (ours, root / f"mk_{name}")
    (root / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run(
        [str(MERGEKIT_PY), str(RUNNER), str(root / "jobs.json")], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return outs


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with CheckpointReader(path) as r:
        return {k: r.get(k).float().clone() for k in r}


EXACT = [
    "linear",
    "linear_filter",
    "task_arithmetic",
    "ties",
    "ties_unnormalized",
    "breadcrumbs",
    "breadcrumbs_ties",
    "dare_linear_d1",
    "slerp",
    "multislerp",
    "model_stock",
    "passthrough",
]


#: fp32 unit roundoff: the two tools add the same task vector to the same base in different orders
EPS32 = torch.finfo(torch.float32).eps


@pytest.mark.parametrize("name", EXACT)
def test_task_vectors_equal_within_fp32_rounding(both: dict, family: dict[str, Path], name: str) -> None:
    """Compare ``out - base``, not ``out``: on norm weights near 1.0 a relative tolerance on the output
    would hide a wrong weighting of a 0.02 task vector. The bound is fp32 rounding: a few ulps of the
    largest input entry (where the two tools round ``θ0 + Δ`` differently) plus 1e-4 of the task vector
    (summation order in norms and dot products)."""
    ours, theirs = (_tensors(p) for p in both[name])
    inputs = [_tensors(family[k]) for k in ("base", "ft1", "ft2", "ft3")]
    base = inputs[0]
    assert ours.keys() == theirs.keys()
    moved = 0
    for k in ours:
        assert ours[k].shape == theirs[k].shape, k
        if name == "passthrough":  # a copy of stacked layers, renamed: nothing is computed
            assert torch.equal(ours[k], theirs[k]), k
            continue
        ref = base[k] if base[k].shape == theirs[k].shape else torch.zeros_like(theirs[k])
        mine, want = ours[k] - ref, theirs[k] - ref
        scale = torch.stack([t[k].abs() for t in inputs if t[k].shape == theirs[k].shape]).amax(0)
        bound = 8 * EPS32 * torch.maximum(scale, theirs[k].abs()) + 1e-4 * want.abs()
        excess = (mine - want).abs() - bound
        assert float(excess.max()) <= 0, (k, float((mine - want).abs().max()), float(want.abs().max()))
        moved += int(want.abs().max() > 1e-3)
    assert moved > 0 or name == "passthrough", "no tensor moved away from the base: the comparison would be vacuous"


@pytest.mark.parametrize("name", ["dare_linear", "della_linear"])
def test_random_drop_differs_only_in_the_mask(both: dict, family: dict[str, Path], name: str) -> None:
    """Documented difference: the random masks differ (different RNG use), but both keep the
    L1 norm of each task vector (mergekit's L1 rescale) and drop about half of it."""
    ours, theirs = (_tensors(p) for p in both[name])
    base, ft = _tensors(family["base"]), _tensors(family["ft1"])
    for k in ours:
        if ours[k].numel() < 256:
            continue
        d = (ft[k] - base[k]).abs().sum()
        for out in (ours, theirs):
            delta = out[k] - base[k]
            torch.testing.assert_close(delta.abs().sum(), d, rtol=1e-3, atol=1e-4)
            kept = float((delta != 0).float().mean())
            assert 0.35 < kept < 0.65, (k, kept)
