"""Bad input is reported before anything is written, naming the model, tensor or field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lmbricks.errors import CheckpointError, ConfigError, LmbricksError, UnknownNameError
from lmbricks.merge import merge
from lmbricks.testing import save_tiny_model, tiny_llama_config


def _ties(f: dict[str, Path], *others: Path) -> dict:
    return {
        "merge_method": "ties",
        "base_model": str(f["base"]),
        "models": [{"model": str(p), "parameters": {"weight": 0.5, "density": 0.5}} for p in others],
    }


def _assert_fails(recipe: dict, out: Path, exc: type[Exception], *needles: str) -> None:
    with pytest.raises(exc) as info:
        merge(recipe, out)
    for n in needles:
        assert n in str(info.value), str(info.value)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temp dir left"


def test_mismatched_hidden_size(family: dict[str, Path], tmp_path: Path) -> None:
    other = save_tiny_model(tmp_path / "wide", tiny_llama_config(num_hidden_layers=4, hidden_size=48), seed=5)
    _assert_fails(_ties(family, family["ft1"], other), tmp_path / "out", ConfigError, "hidden_size", "wide")


def test_mismatched_architecture(family: dict[str, Path], tmp_path: Path) -> None:
    from lmbricks.testing import tiny_mixtral_config

    moe = save_tiny_model(tmp_path / "moe", tiny_mixtral_config(num_hidden_layers=4), seed=5)
    _assert_fails(_ties(family, family["ft1"], moe), tmp_path / "out", ConfigError, "architectures differ", "moe")


def test_missing_tensor(family: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(family["ft1"], broken)
    from safetensors.torch import load_file, save_file

    sd = load_file(broken / "model.safetensors")
    del sd["model.layers.2.mlp.up_proj.weight"]
    save_file(sd, broken / "model.safetensors", metadata={"format": "pt"})
    _assert_fails(
        _ties(family, broken, family["ft2"]),
        tmp_path / "out",
        CheckpointError,
        "model.layers.2.mlp.up_proj.weight",
        "broken",
    )


def test_layer_range_past_the_end(family: dict[str, Path], tmp_path: Path) -> None:
    recipe = {
        "merge_method": "passthrough",
        "slices": [{"sources": [{"model": str(family["ft1"]), "layer_range": [2, 6]}]}],
    }
    _assert_fails(recipe, tmp_path / "out", ConfigError, "layer_range", "only 4 layers")


def test_unknown_method_and_parameter(family: dict[str, Path], tmp_path: Path) -> None:
    recipe = _ties(family, family["ft1"])
    _assert_fails({**recipe, "merge_method": "tiez"}, tmp_path / "out", UnknownNameError, "tiez", "ties")
    recipe["models"][0]["parameters"]["densty"] = 0.3
    _assert_fails(recipe, tmp_path / "out", ConfigError, "models[0].parameters.densty", "unknown parameter")
    _assert_fails({**_ties(family, family["ft1"]), "colour": 1}, tmp_path / "out", ConfigError, "colour", "unknown key")


def test_bad_parameter_value_and_missing_required(family: dict[str, Path], tmp_path: Path) -> None:
    recipe = _ties(family, family["ft1"])
    recipe["models"][0]["parameters"]["density"] = 1.5
    _assert_fails(recipe, tmp_path / "out", ConfigError, "density")
    recipe = _ties(family, family["ft1"])
    del recipe["models"][0]["parameters"]["weight"]
    _assert_fails(recipe, tmp_path / "out", ConfigError, "weight")


def test_vocab_mismatch_names_tokenizer_source(family: dict[str, Path], tmp_path: Path) -> None:
    other = save_tiny_model(tmp_path / "bigvocab", tiny_llama_config(num_hidden_layers=4, vocab_size=400), seed=6)
    _assert_fails(_ties(family, other), tmp_path / "out", ConfigError, "tokenizer_source", "embed_tokens")


def test_adapter_for_another_base(family: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
    save_file(
        {
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 64),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(32, 2),
        },
        adapter / "adapter_model.safetensors",
    )
    recipe = _ties(family, Path(f"{family['ft1']}+{adapter}"))
    _assert_fails(recipe, tmp_path / "out", CheckpointError, "q_proj", "another base")


def test_existing_output_is_refused(family: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        merge(_ties(family, family["ft1"]), out)
    assert (out / "keep.txt").read_text() == "mine"


def test_errors_are_lmbricks_errors() -> None:
    assert issubclass(UnknownNameError, LmbricksError)
