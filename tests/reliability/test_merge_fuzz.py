"""Property-based fuzz of merge recipes: every recipe either merges into finite weights or fails cleanly.

Over a pool of tiny fp32 Llama models (a base, fine-tunes, one stored in bf16, one with a planted NaN,
one with a planted inf, one of another width, one of another depth), hypothesis draws recipes for
every registered merge method with hostile parameters (negative, zero, huge, inf, nan, wrong types,
missing and unknown keys, gradients and filters), random base and model choices, dtype and
out_dtype, and runs ``lmbricks merge`` in-process. For every recipe:

* exit 0: the output exists and every tensor in it is finite;
* exit 2: exactly one ``error:`` line, no traceback, no output directory, no hidden temporary;
* nothing else (an uncaught exception is a bug);
* the input files stay byte-identical (hashed at the start, compared every 50 recipes and at the end).

Outcome counts are printed at the end (run with ``-s`` to see them) and, when ``LMBRICKS_FUZZ_REPORT``
names a file, written there as JSON (docs/reliability.md quotes them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import typer.main
import typer.testing
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lmbricks.cli.main import app
from lmbricks.merge import all_methods
from lmbricks.testing import save_tiny_model, tiny_llama_config

# 1000: with 20 methods, 500 derandomized recipes left ties, linear and della_linear without a clean merge
EXAMPLES = int(os.environ.get("LMBRICKS_FUZZ_EXAMPLES", "1000"))
NAN_TENSOR = "model.layers.1.mlp.up_proj.weight"
INF_TENSOR = "model.norm.weight"

runner = CliRunner()


def _plant(src: Path, dst: Path, name: str, value: float) -> Path:
    """Copy model ``src`` to ``dst`` with one entry of tensor ``name`` set to ``value``."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    sd = load_file(dst / "model.safetensors")
    sd[name].view(-1)[7] = value
    save_file(sd, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Name -> model directory: the inputs every recipe draws from (built once per module)."""
    root = tmp_path_factory.mktemp("fuzz_models")
    cfg = tiny_llama_config(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1)
    base = save_tiny_model(root / "base", cfg, seed=0)
    models = {"base": base}
    for i in (1, 2):
        models[f"ft{i}"] = save_tiny_model(root / f"ft{i}", cfg, seed=i, perturb_from=base, noise=0.02)
    models["ft_bf16"] = save_tiny_model(
        root / "ft_bf16", cfg, seed=3, perturb_from=base, noise=0.02, dtype=torch.bfloat16
    )
    models["nan"] = _plant(models["ft1"], root / "nan", NAN_TENSOR, float("nan"))
    models["inf"] = _plant(models["ft2"], root / "inf", INF_TENSOR, float("inf"))
    models["wide"] = save_tiny_model(root / "wide", tiny_llama_config(
        hidden_size=16, intermediate_size=48, num_attention_heads=2, num_key_value_heads=1), seed=4)  # fmt: skip
    models["deep"] = save_tiny_model(root / "deep", tiny_llama_config(
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=3),
        seed=5)  # fmt: skip
    return models


def _hash_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- recipe strategies ------------------------------------------------------------------------------

METHODS = {m.name: m for m in all_methods()}
PARAM_NAMES = sorted({p.name for m in METHODS.values() for p in m.params})
HEALTHY = ["base", "ft1", "ft2", "ft_bf16"]
BROKEN = ["nan", "inf", "wide", "deep", "missing"]  # "missing": a directory that does not exist

hostile_floats = st.one_of(
    st.sampled_from([0.0, -0.0, -1.0, 2.0, -3.5, 1e-30, 1e30, -1e30, 1e300, 1e39, 65504.0, 1e5, 1.5]),
    st.sampled_from([float("inf"), float("-inf"), float("nan")]),
    st.floats(allow_nan=True, allow_infinity=True),
)
hostile = st.one_of(
    hostile_floats,
    st.integers(min_value=-3, max_value=3),
    st.booleans(),
    st.sampled_from(["l1", "abc", "0.5", "inf", "nan", ""]),
    st.none(),
    st.just([]),
    st.just({"value": 0.5, "bogus": 1}),  # unknown key in a filter entry
    st.just({"nested": {"x": 1}}),
)
sane_floats = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.9, 1.0]))


def sane_value(param: Any) -> st.SearchStrategy[Any]:
    """A value of the parameter's kind in its usual range (the recipes users write)."""
    if param.kind is bool:
        return st.booleans()
    if param.kind is int:
        return st.integers(min_value=0, max_value=1000)
    if param.kind is str:
        return st.sampled_from(param.choices or ("x",))
    if param.name == "eps":
        return st.sampled_from([1e-8, 1e-6, 1e-4])
    if param.name == "epsilon":
        return st.sampled_from([0.0, 0.05, 0.1, 0.15])
    if param.name in ("weight", "lambda", "scale", "t"):
        return st.one_of(sane_floats, st.sampled_from([-1.0, -0.5, 1.5, 2.0]))
    return sane_floats


@st.composite
def setting(draw: st.DrawFn, param: Any, hostile_rate: int) -> Any:
    """A recipe value for ``param``: a scalar, a layer gradient or filter entries; one in
    ``hostile_rate`` is hostile."""
    if hostile_rate and draw(st.integers(0, hostile_rate - 1)) == 0:
        return draw(hostile)
    shape = draw(st.integers(0, 9))
    value = sane_value(param)
    if shape == 0 and param.kind in (float, int):  # a gradient across the layers
        return draw(st.lists(value, min_size=1, max_size=4))
    if shape == 1:  # filter entries (first match wins; no filter matches all)
        entries = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"value": value}, optional={"filter": st.sampled_from(["mlp", "self_attn", "*", "embed", "zzz"])}
                ),
                min_size=1,
                max_size=3,
            )
        )
        return entries
    return draw(value)


@st.composite
def parameters(draw: st.DrawFn, method: Any, per_input: bool, hostile_rate: int) -> dict[str, Any] | None:
    """A ``parameters`` mapping: some of the method's parameters, now and then a foreign or typo'd key."""
    chosen = [p for p in method.params if p.per_input == per_input or (not per_input and draw(st.booleans()))]
    out = {}
    for p in chosen:
        if (not p.required or hostile_rate) and draw(st.integers(0, 4)) == 0:
            continue  # left out: the default applies, or (hostile recipes) a required one is missing
        out[p.name] = draw(setting(p, hostile_rate))
    if hostile_rate and draw(st.integers(0, 2 * hostile_rate)) == 0:
        out[draw(st.sampled_from([*PARAM_NAMES, "weigth", "densty", "x"]))] = draw(hostile)
    return out or None


@st.composite
def recipes(draw: st.DrawFn) -> dict[str, Any]:
    """A merge recipe (names of pool models, resolved to paths later)."""
    name = draw(st.sampled_from(sorted(METHODS)))
    method = METHODS[name]
    # 0: clean recipe over healthy models (the most, so that many merges run to the end);
    # 1-3: one value in 8, 4 or 2 hostile; 4: broken inputs (NaN, inf, other shapes, missing)
    mood = draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 4]))
    hostile_rate = {0: 0, 1: 8, 2: 4, 3: 2, 4: 0}[mood]
    pool = st.sampled_from(HEALTHY) if mood != 4 else st.sampled_from([*HEALTHY, *BROKEN])
    r: dict[str, Any] = {"merge_method": name if draw(st.integers(0, 40)) else "tiez"}
    n_max = method.max_models or 3
    names = draw(st.lists(pool, min_size=method.min_models, max_size=min(n_max, 3)))
    if mood == 4 and draw(st.booleans()):
        names.append(draw(st.sampled_from(BROKEN)))  # at least one broken input
    wants_base = method.base == "required" or (method.base == "optional" and draw(st.booleans()))
    if wants_base or (mood and draw(st.integers(0, 5)) == 0):  # now and then a base for a method without one
        others = [h for h in HEALTHY if h not in names]  # clean recipes: a base that is not also a model
        r["base_model"] = draw(st.sampled_from(others) if mood == 0 and others else pool)
    if draw(st.integers(0, 6)) == 0:  # slices (frankenmerges), a layer range per source
        span = draw(st.sampled_from([(0, 1), (1, 2), (0, 2)]))
        bad_range = st.sampled_from([[1, 0], [0, 5], [2, 3], [-1, 1]])
        r["slices"] = [
            {
                "sources": [
                    {
                        "model": n,
                        "layer_range": list(span) if hostile_rate == 0 or draw(st.integers(0, 3)) else draw(bad_range),
                        **({"parameters": p} if (p := draw(parameters(method, True, hostile_rate))) else {}),
                    }
                    for n in ([*names, r["base_model"]] if "base_model" in r else names)[:3]
                ]
            }
            for _ in range(draw(st.integers(1, 2)))
        ]
    else:
        r["models"] = [
            {"model": n, **({"parameters": p} if (p := draw(parameters(method, True, hostile_rate))) else {})}
            for n in names
        ]
    if p := draw(parameters(method, False, hostile_rate)):
        r["parameters"] = p
    dtypes = [None, None, None, "float32", "bfloat16", "float16", "fp16", "bf16"]
    if hostile_rate:
        dtypes += ["int8", "float8"]
    for key in ("dtype", "out_dtype"):
        if (d := draw(st.sampled_from(dtypes))) is not None:
            r[key] = d
    if draw(st.integers(0, 20)) == 0:
        r["tokenizer_source"] = draw(st.sampled_from(["base", "union", "ft1", "nowhere"]))
    if hostile_rate and draw(st.integers(0, 10)) == 0:
        r[draw(st.sampled_from(["merge_methd", "model", "parameter", "colour", "tokenizer", "slice"]))] = 1
    if hostile_rate and draw(st.integers(0, 20)) == 0:
        r["models" if "models" in r else "slices"] = draw(st.sampled_from(["ft1", 3, [None], [{"model": 1}], []]))
    return r


def _resolve(recipe: dict[str, Any], pool: dict[str, Path], missing: Path) -> dict[str, Any]:
    """Replace model names by paths (``missing`` names a directory that does not exist)."""

    def path(name: Any) -> Any:
        if not isinstance(name, str):
            return name
        return str(pool[name]) if name in pool else str(missing)

    out = json.loads(json.dumps(recipe))  # deep copy (nan/inf survive json round trips in Python)
    if "base_model" in out:
        out["base_model"] = path(out["base_model"])
    if isinstance(out.get("models"), list):
        for m in out["models"]:
            if isinstance(m, dict) and "model" in m:
                m["model"] = path(m["model"])
    for sl in out.get("slices") if isinstance(out.get("slices"), list) else []:
        for src in sl.get("sources", []) if isinstance(sl, dict) else []:
            src["model"] = path(src["model"])
    if out.get("tokenizer_source") == "ft1":
        out["tokenizer_source"] = str(pool["ft1"])
    return out


# -- the property -----------------------------------------------------------------------------------


def _output_finite(out: Path) -> bool:
    from safetensors.torch import load_file

    files = sorted(out.glob("*.safetensors"))
    assert files, f"{out}: no weights written"
    for f in files:
        for t in load_file(f).values():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return False
    return True


def test_merge_recipes_fuzz(pool: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """≥1000 random recipes: exit 0 with finite weights, or exit 2 with one clear line; nothing else."""
    # The runner rebuilds the click command of the whole CLI from its typer app on every invoke (25 ms of
    # CPU, a fifth of a recipe here); this test builds it once and gives the same command every time.
    command = typer.main.get_command(app)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: command)
    # Its own hash cache: each merge reads and rewrites $LMBRICKS_HOME/hashes.json whole (the shared one held
    # 1 MB of other runs' entries), and the fuzz has no business rewriting a user's cache.
    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    missing = tmp_path / "no-such-model"
    models_root = pool["base"].parent
    before = _hash_tree(models_root)
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    merged: Counter[str] = Counter()  # successful merges per method
    started = time.perf_counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )
    @given(recipe=recipes())
    def check(recipe: dict[str, Any]) -> None:
        n = sum(counts.values())
        rfile = work / "recipe.yaml"
        rfile.write_text(yaml.safe_dump(_resolve(recipe, pool, missing)))
        out = work / f"out-{n}"
        res = runner.invoke(app, ["merge", str(rfile), str(out)])
        shown = f"recipe: {recipe}\noutput:\n{res.output}"
        leftovers = [p.name for p in work.iterdir() if p.name.startswith(".")]
        if res.exit_code == 0:
            assert out.is_dir(), shown
            finite = _output_finite(out)
            counts["ok" if finite else "non-finite"] += 1
            merged[recipe["merge_method"]] += 1
            shutil.rmtree(out)
            assert finite, "non-finite output weights\n" + shown
        elif res.exit_code == 2 and isinstance(res.exception, SystemExit):
            # stderr also holds the progress bar when the error comes while streaming
            lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
            clear = len(lines) == 1 and "Traceback" not in res.output
            counts["clear error" if clear else "unclear error"] += 1
            errors[_error_kind(lines[0] if lines else "")] += 1
            assert clear, "not one clear error line\n" + shown
            assert not out.exists(), "output left behind after an error\n" + shown
        else:
            counts["traceback"] += 1
            import traceback

            tb = "".join(traceback.format_exception(res.exception)) if res.exception else ""
            raise AssertionError(f"uncaught exception (exit {res.exit_code})\n{shown}\n{tb}")
        assert not leftovers, f"hidden temporaries left: {leftovers}\n" + shown
        if (n + 1) % 50 == 0:
            modified = [k for k, v in _hash_tree(models_root).items() if before.get(k) != v]
            counts["modified"] += len(modified)
            assert not modified, f"inputs modified: {modified}"

    check()
    after = _hash_tree(models_root)
    modified = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    counts["modified"] += len(modified)
    elapsed = time.perf_counter() - started
    summary = {
        "recipes": sum(v for k, v in counts.items() if k != "modified"),
        **{k: counts[k] for k in ("ok", "clear error", "unclear error", "traceback", "non-finite", "modified")},
        "seconds": round(elapsed, 1),
        "merged per method": dict(sorted(merged.items())),
        "error kinds": dict(errors.most_common()),
    }
    print("\nmerge fuzz:", json.dumps(summary, indent=1))
    if report := os.environ.get("LMBRICKS_FUZZ_REPORT"):
        Path(report).write_text(json.dumps(summary, indent=1) + "\n")
    assert not modified, f"inputs modified: {modified}"
    assert summary["recipes"] >= EXAMPLES * 0.9, summary  # hypothesis ran (almost) every example
    if EXAMPLES >= 500:  # every method must have run to the end at least once
        assert set(merged) == set(METHODS), f"methods never merged: {sorted(set(METHODS) - set(merged))}"


def _error_kind(line: str) -> str:
    """A coarse label for an error line (to see which checks the fuzz exercises)."""
    text = line.lower()
    for key in (
        "finite",
        "unknown key",
        "unknown parameter",
        "unknown merge_method",
        "must be",
        "required",
        "shapes differ",
        "differ in",
        "layers",
        "no such directory",
        "needs a base",
        "takes",
        "dtype",
        "tokenizer",
        "sum",
        "direction",
        "epsilon",
        "density",
    ):
        if key in text:
            return key
    return "other"
