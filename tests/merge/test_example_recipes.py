"""mergekit's own example recipes (``tests/merge/recipes/``, see its README) on tiny local models.

Each example runs through ``lmbricks merge`` as written; where mergekit is installed, both tools run
it again in fp32 and their outputs agree within the bound of ``test_mergekit_agreement.py``. All
mergekit runs happen in one subprocess.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from lmbricks.checkpoint import CheckpointReader
from lmbricks.cli.main import app
from lmbricks.merge import merge, parse_recipe, plan_merge
from lmbricks.testing import save_tiny_model, tiny_llama_config

#: measured 64 s wall (21 s CPU) for the whole module on a loaded 2-core machine, most of it mergekit
pytestmark = pytest.mark.slow
RECIPES = Path(__file__).with_name("recipes")
EXAMPLES = sorted(p.name for p in RECIPES.glob("*.yml"))
ROOT = Path(__file__).resolve().parents[2]
MERGEKIT_PY = ROOT / ".bench-venvs" / "mergekit" / "bin" / "python"
RUNNER = Path(__file__).with_name("mergekit_runner.py")

#: Examples lmbricks cannot run -> the exact error ``lmbricks merge`` gives (none today).
UNSUPPORTED: dict[str, str] = {}
#: Output layers of each example on the tiny models (the slice recipes cut the 40-layer Llamas).
LAYERS = {
    "arcee_fusion.yml": 2,
    "bio-merge.yml": 2,
    "gradient-slerp.yml": 40,
    "linear.yml": 40,
    "orcamini-platy-44layer.yml": 44,
    "ties.yml": 40,
}
#: fp32 unit roundoff (the bound of test_mergekit_agreement.py is a few of it)
EPS32 = torch.finfo(torch.float32).eps
runner = CliRunner()


def _config(arch: str, layers: int) -> Any:
    if arch == "mistral":
        from transformers import MistralConfig

        trunk = {k: v for k, v in tiny_llama_config().to_dict().items() if k in MistralConfig().to_dict()}
        return MistralConfig(**{**trunk, "num_hidden_layers": layers, "sliding_window": None})
    return tiny_llama_config(num_hidden_layers=layers)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every name of ``recipes/models.yaml`` -> its tiny local model (bases first)."""
    root = tmp_path_factory.mktemp("example_models")
    spec = yaml.safe_load((RECIPES / "models.yaml").read_text())
    built: dict[str, Path] = {}
    for name, m in sorted(spec.items(), key=lambda kv: "perturb_from" in kv[1]):
        base = built[m["perturb_from"]] if "perturb_from" in m else None
        out = root / name.replace("/", "__")
        built[name] = save_tiny_model(out, _config(m["arch"], m["layers"]), seed=m["seed"], perturb_from=base,
                                      noise=0.02 if base is not None else 0.0)  # fmt: skip
    return built


def _mapped(example: str, models: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    """The example with every model name replaced by its tiny model (every name must be mapped)."""
    recipe = yaml.safe_load((RECIPES / example).read_text())

    def local(name: str) -> str:
        assert name in models, f"{example}: model {name!r} has no entry in recipes/models.yaml"
        return str(models[name])

    if "base_model" in recipe:
        recipe["base_model"] = local(recipe["base_model"])
    for m in recipe.get("models") or []:
        m["model"] = local(m["model"])
    for s in recipe.get("slices") or []:
        for src in s["sources"]:
            src["model"] = local(src["model"])
    return {**recipe, **overrides}


def test_every_example_is_covered(models: dict[str, Path], tmp_path: Path) -> None:
    """Six examples at the recorded commit; each is either checked below or gives its listed error."""
    assert len(EXAMPLES) == 6 and set(UNSUPPORTED) <= set(EXAMPLES)
    assert set(LAYERS) == set(EXAMPLES) - set(UNSUPPORTED)
    for example, error in UNSUPPORTED.items():
        recipe = tmp_path / example
        recipe.write_text(yaml.safe_dump(_mapped(example, models)))
        res = runner.invoke(app, ["merge", str(recipe), str(tmp_path / "out")])
        assert res.exit_code == 2 and error in " ".join(res.output.split()), res.output


@pytest.mark.parametrize("example", sorted(LAYERS))
def test_example_runs_as_written(example: str, models: dict[str, Path], tmp_path: Path) -> None:
    recipe = _mapped(example, models)
    path = tmp_path / example
    path.write_text(yaml.safe_dump(recipe))
    res = runner.invoke(app, ["merge", str(path), str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["num_hidden_layers"] == LAYERS[example]
    want = {"float16": torch.float16, "bfloat16": torch.bfloat16}[recipe["dtype"]]
    with CheckpointReader(tmp_path / "out") as r:
        assert {r.info(k).dtype for k in r} == {want}
        assert f"model.layers.{LAYERS[example] - 1}.mlp.down_proj.weight" in r


@pytest.fixture(scope="module")
def both(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Example -> (lmbricks output, mergekit output), both from the recipe with ``dtype: float32``."""
    if not MERGEKIT_PY.exists():
        pytest.skip(f"mergekit venv absent ({MERGEKIT_PY}); create it with `make mergekit-venv`")
    root = tmp_path_factory.mktemp("examples_fp32")
    jobs, outs = [], {}
    for example in sorted(LAYERS):
        path = root / example
        path.write_text(yaml.safe_dump(_mapped(example, models, dtype="float32")))
        jobs.append([str(path), str(root / f"mk_{example}")])
        outs[example] = (merge(path, root / f"lb_{example}"), root / f"mk_{example}")
    (root / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run(
        [str(MERGEKIT_PY), str(RUNNER), str(root / "jobs.json")], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return outs


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with CheckpointReader(path) as r:
        return {k: r.get(k).float().clone() for k in r}


def _ties_at_the_cut(recipe: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Per output tensor with a tie at a density cut: where some model's ``|δ|`` equals the value at
    its cut (rank ``max(1, int(d·n))``, the density the plan resolved for that tensor)."""
    plan = plan_merge(parse_recipe({**recipe, "dtype": "float32"}))
    found = {}
    for tp in plan.tensors:
        assert tp.base is not None
        base = plan.inputs[tp.base[0]].read(tp.base[1]).float()
        mask = torch.zeros(tp.shape, dtype=torch.bool)
        for (key, name), density in zip(tp.terms, tp.kwargs["density"], strict=True):
            magnitude = (plan.inputs[key].read(name).float() - base).abs()
            if density < 1:
                cut = magnitude.flatten().topk(max(1, int(density * magnitude.numel()))).values[-1]
                mask |= magnitude == cut
        if int(mask.sum()) > 1:  # one entry at the cut is no tie
            found[tp.name] = mask
    return found


@pytest.mark.parametrize("example", sorted(LAYERS))
def test_example_agrees_with_mergekit(example: str, both: dict, models: dict[str, Path]) -> None:
    """The bound of test_mergekit_agreement.py on the change from the family's base: 8 fp32 roundings
    of the largest input entry plus 1e-4 of the change; passthrough copies must be equal. TIES may
    differ only among entries tied at a density cut (docs/merging.md: even fp32 fine-tunes made as
    base + noise have a few equal ``|δ|``; ties.yml hits one, 2 entries of 2048)."""
    ours, theirs = (_tensors(p) for p in both[example])
    assert ours.keys() == theirs.keys()
    recipe = _mapped(example, models)
    names = [recipe.get("base_model"), *(m["model"] for m in recipe.get("models") or [])]
    names += [src["model"] for s in recipe.get("slices") or [] for src in s["sources"]]
    inputs = [_tensors(Path(n)) for n in dict.fromkeys(n for n in names if n)]
    spec = yaml.safe_load((RECIPES / "models.yaml").read_text())
    first = {str(p): n for n, p in models.items()}[next(n for n in names if n)]
    base = _tensors(models[spec[first].get("perturb_from", first)])  # the family's base
    tied = _ties_at_the_cut(recipe) if recipe["merge_method"] == "ties" else {}
    moved = 0
    for k in theirs:
        assert ours[k].shape == theirs[k].shape, k
        if example == "orcamini-platy-44layer.yml":  # passthrough: stacked layers, renamed
            assert torch.equal(ours[k], theirs[k]), k
            continue
        ref = base[k]
        mine, want = ours[k] - ref, theirs[k] - ref
        scale = torch.stack([t[k].abs() for t in inputs]).amax(0)
        bound = 8 * EPS32 * torch.maximum(scale, theirs[k].abs()) + 1e-4 * want.abs()
        excess = (mine - want).abs() - bound
        if k in tied:  # the documented difference: which of the entries equal at a TIES cut survive
            assert bool(tied[k][excess > 0].all()), (k, int((excess > 0).sum()))
            excess = excess[~tied[k]]
        assert float(excess.max()) <= 0, (k, float((mine - want).abs().max()), float(want.abs().max()))
        moved += int(want.abs().max() > 1e-3)
    assert moved > 0 or example == "orcamini-platy-44layer.yml", "nothing moved: the comparison would be vacuous"
