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
from lmbricks.testing import save_tiny_model, tiny_llama_config

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
def odd_models(family_bf16: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Inputs for the documented differences: the bf16 family (tied |δ|), two fine-tunes with tiny
    task vectors of different sizes (1e-4 and 3e-4), and a pair with a 1.3M-entry embedding."""
    root = tmp_path_factory.mktemp("odd_models")
    cfg = tiny_llama_config()
    small_base = save_tiny_model(root / "small_base", cfg, seed=20)
    big_cfg = tiny_llama_config(vocab_size=40000)
    big_base = save_tiny_model(root / "big_base", big_cfg, seed=30)
    return {
        "bf16_base": family_bf16["base"],
        "bf16_ft1": family_bf16["ft1"],
        "small_base": small_base,
        "small_ft1": save_tiny_model(root / "small_ft1", cfg, seed=21, perturb_from=small_base, noise=1e-4),
        "small_ft2": save_tiny_model(root / "small_ft2", cfg, seed=22, perturb_from=small_base, noise=3e-4),
        "big_base": big_base,
        "big_ft1": save_tiny_model(root / "big_ft1", big_cfg, seed=31, perturb_from=big_base, noise=0.02),
    }


def _odd_recipes(o: dict[str, Path]) -> dict[str, dict]:
    return {
        "ties_bf16_ties": {
            "merge_method": "ties",
            "base_model": str(o["bf16_base"]),
            "models": [{"model": str(o["bf16_ft1"]), "parameters": {"weight": 1.0, "density": 0.3}}],
        },
        "sce_tiny_deltas": {
            "merge_method": "sce",
            "base_model": str(o["small_base"]),
            "models": [{"model": str(o["small_ft1"])}, {"model": str(o["small_ft2"])}],
        },
        "arcee_fusion_big": {
            "merge_method": "arcee_fusion",
            "base_model": str(o["big_base"]),
            "models": [{"model": str(o["big_ft1"])}],
        },
    }


@pytest.fixture(scope="module")
def both(
    family: dict[str, Path], odd_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Path, Path]]:
    """Name -> (lmbricks whole tensors, lmbricks in 64-element blocks, mergekit), every recipe."""
    root = tmp_path_factory.mktemp("agreement_more")
    jobs, outs = [], {}
    for name, recipe in {**_recipes(family), **_odd_recipes(odd_models)}.items():
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


# -- documented differences ------------------------------------------------------------------------


def test_ties_on_bf16_deltas_differs_only_among_ties_at_the_cut(both: dict, odd_models: dict[str, Path]) -> None:
    """bf16 task vectors have many equal |δ|: both tools keep exactly max(1, int(d·n)) entries and the
    same entries above the cut; of those equal to the cut, lmbricks keeps the highest flat indices,
    mergekit's argsort an unspecified subset. Every differing entry is a tie at the cut."""
    base = _tensors(odd_models["bf16_base"])
    ft = _tensors(odd_models["bf16_ft1"])
    whole, blocks, theirs = (_tensors(p) for p in both["ties_bf16_ties"])
    differing = total = 0
    for k in base:
        delta = (ft[k] - base[k]).reshape(-1)
        mags = delta.abs()
        n = mags.numel()
        keep = max(1, int(0.3 * n))
        cut = float(mags.sort(descending=True).values[keep - 1])
        tied = (mags == cut).nonzero().reshape(-1)
        kept_tied = keep - int((mags > cut).sum())
        expected = mags > cut
        expected[tied[tied.numel() - kept_tied :]] = True
        mk_kept = (theirs[k] - base[k]).reshape(-1) != 0
        for ours in (whole, blocks):
            got = (ours[k] - base[k]).reshape(-1)
            assert torch.equal(got != 0, expected), k  # the documented rule, exactly
            assert torch.equal(got[expected], delta[expected]), k
        if cut > 0:  # where the cut is 0 both keep every nonzero entry (dropping zeros changes nothing)
            assert int(mk_kept.sum()) == keep, k
        assert torch.equal(mk_kept & (mags != cut), expected & (mags != cut)), k  # same set off the ties
        differing += int((mk_kept != expected).sum())
        total += n
    assert differing > 0  # the inputs do exercise the ties
    assert differing / total < 0.05


def _sce_reference(base: torch.Tensor, fts: list[torch.Tensor], uniform: bool) -> torch.Tensor:
    d = torch.stack([f - base for f in fts])
    w = d.square().reshape(len(fts), -1).mean(1)
    w = torch.full_like(w, 1 / len(fts)) if uniform else w / w.sum()
    w = w.reshape(-1, *([1] * base.dim()))
    agree = w * (d.sign() == torch.where(d.sum(0) >= 0, 1.0, -1.0))
    return base + (d * agree).sum(0) / agree.sum(0).clamp(min=1e-6)


def test_sce_on_tiny_task_vectors_weights_by_energy_where_mergekit_goes_uniform(
    both: dict, odd_models: dict[str, Path]
) -> None:
    """Documented difference: with |δ| ~ 1e-4, Σ mean(δi²) < 1e-6 and mergekit uses uniform weights;
    lmbricks keeps the paper's energy weights (here about 0.1 and 0.9)."""
    base = _tensors(odd_models["small_base"])
    fts = [_tensors(odd_models[k]) for k in ("small_ft1", "small_ft2")]
    whole, blocks, theirs = (_tensors(p) for p in both["sce_tiny_deltas"])
    far = 0
    for k in base:
        tol = 4 * EPS32 * float(base[k].abs().max())
        ours_ref = _sce_reference(base[k], [f[k] for f in fts], uniform=False)
        torch.testing.assert_close(theirs[k], _sce_reference(base[k], [f[k] for f in fts], uniform=True),
                                   rtol=0, atol=tol)  # fmt: skip
        for ours in (whole, blocks):
            torch.testing.assert_close(ours[k], ours_ref, rtol=0, atol=tol)
        far += float((whole[k] - theirs[k]).abs().max()) > 100 * tol
    assert far >= len(base) // 2


def test_arcee_fusion_on_large_tensors_uses_exact_quantiles(both: dict, odd_models: dict[str, Path]) -> None:
    """Documented difference: above 10^6 entries mergekit estimates the quantiles from 10^6 entries
    drawn at random (with replacement; a different fence on every run), lmbricks selects the exact
    order statistics. The kept sets then differ only near the fence."""
    base, ft = _tensors(odd_models["big_base"]), _tensors(odd_models["big_ft1"])
    whole, blocks, theirs = (_tensors(p) for p in both["arcee_fusion_big"])
    big = [k for k in base if base[k].numel() > 1_000_000]
    assert big
    for k in big:
        p = torch.softmax(ft[k], -1) + 1e-8
        q = torch.softmax(base[k], -1) + 1e-8
        importance = ((ft[k] - base[k]).abs() * (p * (p / q).log()).sum(-1, keepdim=True)).reshape(-1)
        s = importance.sort().values
        n = s.numel()
        q1, med, q3 = (s[int(x * (n - 1))] for x in (0.25, 0.5, 0.75))
        expected = importance >= med + 1.5 * (q3 - q1)
        for ours in (whole, blocks):
            assert torch.equal((ours[k] - base[k]).reshape(-1) != 0, expected), k
        mk = (theirs[k] - base[k]).reshape(-1) != 0
        assert float((mk != expected).float().mean()) < 0.01, k
        band = importance[mk != expected]
        if band.numel():  # the entries that differ lie next to the fence
            fence = float(med + 1.5 * (q3 - q1))
            assert float((band - fence).abs().max()) < 0.05 * fence, k
