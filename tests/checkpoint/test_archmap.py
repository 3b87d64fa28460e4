"""archmap against what transformers really saves, for each supported architecture."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lmbricks.checkpoint import (
    CheckpointReader,
    TensorRole,
    architecture_of,
    expected_tensors,
    inventory,
    save_state_dict,
    tensor_role,
    validate_checkpoint,
)
from lmbricks.errors import CheckpointError

ArchModel = Callable[[str], Path]

ARCH_OF_VARIANT = {
    "llama": "llama",
    "llama_bias_tied": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen3_bias": "qwen3",
    "gemma3": "gemma3",
    "mixtral": "mixtral",
    "qwen2_moe": "qwen2_moe",
    "qwen2_moe_mixed": "qwen2_moe",
    "qwen3_moe": "qwen3_moe",
    "qwen3_moe_mixed": "qwen3_moe",
}
VARIANTS = list(ARCH_OF_VARIANT)


def _hf_param_count(path: Path) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return sum(p.numel() for p in model.parameters())  # tied parameters counted once


@pytest.mark.parametrize("variant", VARIANTS)
def test_expected_tensors_equal_saved_set_and_shapes(arch_model: ArchModel, variant: str) -> None:
    with CheckpointReader(arch_model(variant)) as reader:
        assert architecture_of(reader.config) == ARCH_OF_VARIANT[variant]
        assert expected_tensors(reader.config) == reader.shapes()
        validate_checkpoint(reader)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_saved_tensor_has_a_role(arch_model: ArchModel, variant: str) -> None:
    arch = ARCH_OF_VARIANT[variant]
    with CheckpointReader(arch_model(variant)) as reader:
        L = reader.config["num_hidden_layers"]
        for name in reader:
            role = tensor_role(arch, name)
            assert role.kind != "other", name
            assert role.part == name.rsplit(".", 1)[1]
            if name.startswith("model.layers."):
                assert role.layer == int(name.split(".")[2]) and 0 <= role.layer < L
            else:
                assert role.layer is None
            if ".experts." in name:
                assert role.kind == "ffn" and role.expert == int(name.split(".experts.")[1].split(".")[0])
            else:
                assert role.expert is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_inventory_sums_to_hf_parameter_count(arch_model: ArchModel, variant: str) -> None:
    with CheckpointReader(arch_model(variant)) as reader:
        inv = inventory(reader.config, reader.shapes())
        config = reader.config
    assert inv["total"] == _hf_param_count(arch_model(variant))
    assert inv["total"] == sum(
        inv[k] for k in ("embedding", "attention", "ffn", "router", "shared_expert_gate", "norm", "head", "other")
    )
    assert inv["other"] == 0
    tied = bool(config.get("tie_word_embeddings"))
    assert inv["tied_embeddings"] == tied
    assert inv["head"] == (0 if tied else config["vocab_size"] * config["hidden_size"])
    assert inv["embedding"] == config["vocab_size"] * config["hidden_size"]
    # The same inventory from the config alone (expected_tensors) as from the file headers.
    assert inventory(config, expected_tensors(config)) == inv


def test_inventory_layout_of_moe_models(arch_model: ArchModel) -> None:
    with CheckpointReader(arch_model("mixtral")) as r:
        inv = inventory(r.config, r.shapes())
    assert inv["experts"] == [4, 4] and inv["expert_neurons"] == [64, 64] and inv["ffn_neurons"] == [256, 256]
    assert inv["experts_per_token"] == 2 and inv["router"] == 2 * 4 * 32

    with CheckpointReader(arch_model("qwen2_moe_mixed")) as r:
        inv = inventory(r.config, r.shapes())
    # layers 0 and 2 sparse (3 experts of 8 + shared 24), layer 1 dense (64)
    assert inv["experts"] == [3, 0, 3]
    assert inv["expert_neurons"] == [8, 0, 8]
    assert inv["shared_expert_neurons"] == [24, 0, 24]
    assert inv["ffn_neurons"] == [3 * 8 + 24, 64, 3 * 8 + 24]
    assert inv["shared_expert_gate"] == 2 * 32

    with CheckpointReader(arch_model("qwen3_moe_mixed")) as r:
        inv = inventory(r.config, r.shapes())
    # layers 0 and 2 sparse (3 experts of 8, no shared expert), layer 1 dense (64)
    assert inv["experts"] == [3, 0, 3] and inv["expert_neurons"] == [8, 0, 8]
    assert inv["shared_expert_neurons"] == [0, 0, 0] and inv["ffn_neurons"] == [24, 64, 24]
    assert inv["router"] == 2 * 3 * 32 and inv["shared_expert_gate"] == 0 and inv["experts_per_token"] == 1

    with CheckpointReader(arch_model("llama")) as r:
        inv = inventory(r.config, r.shapes())
    assert inv["experts"] == [0, 0] and inv["ffn_neurons"] == [64, 64] and inv["experts_per_token"] is None


def test_conftest_tiny_mixtral_fixture_matches(tiny_mixtral: Path) -> None:
    """The shared fixture (transformers 5.x save_pretrained) stores per-expert w1/w2/w3 tensors."""
    with CheckpointReader(tiny_mixtral) as reader:
        assert expected_tensors(reader.config) == reader.shapes()
        assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in reader
        assert inventory(reader.config, reader.shapes())["total"] == _hf_param_count(tiny_mixtral)


@pytest.mark.parametrize(
    ("arch", "name", "role"),
    [
        ("llama", "model.embed_tokens.weight", TensorRole("embedding", None, None, "embed", "weight")),
        ("llama", "lm_head.weight", TensorRole("head", None, None, "lm_head", "weight")),
        ("llama", "model.norm.weight", TensorRole("norm", None, None, "final_norm", "weight")),
        ("llama", "model.layers.3.mlp.gate_proj.weight", TensorRole("ffn", 3, None, "gate", "weight")),
        ("llama", "model.layers.3.mlp.down_proj.bias", TensorRole("ffn", 3, None, "down", "bias")),
        ("qwen2", "model.layers.0.self_attn.k_proj.bias", TensorRole("attention", 0, None, "k", "bias")),
        ("gemma3", "model.layers.5.self_attn.q_norm.weight", TensorRole("norm", 5, None, "q_norm", "weight")),
        (
            "gemma3",
            "model.layers.5.pre_feedforward_layernorm.weight",
            TensorRole("norm", 5, None, "pre_ffn_norm", "weight"),
        ),
        (
            "mixtral",
            "model.layers.0.block_sparse_moe.experts.2.w1.weight",
            TensorRole("ffn", 0, 2, "gate", "weight"),
        ),
        (
            "mixtral",
            "model.layers.0.block_sparse_moe.experts.2.w3.weight",
            TensorRole("ffn", 0, 2, "up", "weight"),
        ),
        (
            "mixtral",
            "model.layers.0.block_sparse_moe.experts.2.w2.weight",
            TensorRole("ffn", 0, 2, "down", "weight"),
        ),
        (
            "mixtral",
            "model.layers.1.block_sparse_moe.gate.weight",
            TensorRole("router", 1, None, "router", "weight"),
        ),
        (
            "mixtral",
            "model.layers.1.mlp.experts.gate_up_proj",
            TensorRole("ffn", 1, None, "experts_gate_up", "weight"),
        ),
        ("qwen2_moe", "model.layers.2.mlp.experts.1.up_proj.weight", TensorRole("ffn", 2, 1, "up", "weight")),
        ("qwen2_moe", "model.layers.2.mlp.gate.weight", TensorRole("router", 2, None, "router", "weight")),
        (
            "qwen2_moe",
            "model.layers.2.mlp.shared_expert.down_proj.weight",
            TensorRole("ffn", 2, None, "shared_down", "weight"),
        ),
        (
            "qwen2_moe",
            "model.layers.2.mlp.shared_expert_gate.weight",
            TensorRole("shared_expert_gate", 2, None, "shared_expert_gate", "weight"),
        ),
        ("qwen3_moe", "model.layers.1.mlp.experts.3.down_proj.weight", TensorRole("ffn", 1, 3, "down", "weight")),
        ("qwen3_moe", "model.layers.1.mlp.gate.weight", TensorRole("router", 1, None, "router", "weight")),
        ("qwen3_moe", "model.layers.1.self_attn.k_norm.weight", TensorRole("norm", 1, None, "k_norm", "weight")),
        (
            "llama",
            "model.layers.4.self_attn.rotary_emb.inv_freq",
            TensorRole("other", 4, None, None, "weight"),
        ),
        ("llama", "vision_tower.patch.weight", TensorRole("other", None, None, None, "weight")),
    ],
)
def test_tensor_role_examples(arch: str, name: str, role: TensorRole) -> None:
    assert tensor_role(arch, name) == role


def test_architecture_of() -> None:
    assert architecture_of({"model_type": "gemma3_text"}) == "gemma3"
    assert architecture_of({"architectures": ["Qwen2MoeForCausalLM"]}) == "qwen2_moe"
    assert architecture_of({"model_type": "qwen3_moe"}) == "qwen3_moe"
    with pytest.raises(CheckpointError, match="supported: llama"):
        architecture_of({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    with pytest.raises(CheckpointError, match="multimodal"):
        architecture_of({"model_type": "gemma3"})
    with pytest.raises(CheckpointError, match="not supported"):
        tensor_role("gpt2", "lm_head.weight")


def test_expected_tensors_names_missing_field() -> None:
    with pytest.raises(CheckpointError, match="'hidden_size'"):
        expected_tensors({"model_type": "llama", "vocab_size": 10, "num_hidden_layers": 1})


def _resave(src: Path, dest: Path, edit: dict[str, torch.Tensor | None]) -> Path:
    """Copy a model through save_state_dict, replacing (tensor) or dropping (None) some tensors."""
    with CheckpointReader(src) as r:
        tensors = {k: r.get(k) for k in r}
        config = r.config
    for name, t in edit.items():
        if t is None:
            tensors.pop(name)
        else:
            tensors[name] = t
    return save_state_dict(dest, tensors, config=config, max_shard_bytes="40KB")


def test_validate_reports_wrong_shape_missing_unexpected_and_dtype(tiny_llama: Path, tmp_path: Path) -> None:
    bad = _resave(
        tiny_llama,
        tmp_path / "bad",
        {
            "model.layers.1.mlp.up_proj.weight": torch.zeros(63, 32),  # wrong shape
            "model.layers.0.self_attn.v_proj.weight": None,  # missing
            "model.layers.0.mlp.extra.weight": torch.zeros(2),  # unexpected
            "model.layers.0.input_layernorm.weight": torch.zeros(32, dtype=torch.int32),  # not a float
        },
    )
    with CheckpointReader(bad) as reader:
        with pytest.raises(CheckpointError) as exc:
            validate_checkpoint(reader)
        up_file = reader.file_of("model.layers.1.mlp.up_proj.weight")
        extra_file = reader.file_of("model.layers.0.mlp.extra.weight")
    msg = str(exc.value)
    assert f"{up_file}: tensor 'model.layers.1.mlp.up_proj.weight' has shape (63, 32), config implies (64, 32)" in msg
    assert f"{bad}: tensor 'model.layers.0.self_attn.v_proj.weight' missing" in msg
    assert f"{extra_file}: tensor 'model.layers.0.mlp.extra.weight' unexpected" in msg
    assert "'model.layers.0.input_layernorm.weight' has dtype torch.int32" in msg


def test_validate_config_mismatch_names_tensor(tiny_llama: Path, tmp_path: Path) -> None:
    """A config edited to disagree with the weights (more heads) is caught before any merge."""
    d = tmp_path / "m"
    shutil.copytree(tiny_llama, d)
    config = json.loads((d / "config.json").read_text())
    config["num_key_value_heads"] = 4
    (d / "config.json").write_text(json.dumps(config))
    with (
        CheckpointReader(d) as reader,
        pytest.raises(
            CheckpointError,
            match=r"model\.safetensors: tensor 'model\.layers\.0\.self_attn\.k_proj\.weight' "
            r"has shape \(16, 32\), config implies \(32, 32\)",
        ),
    ):
        validate_checkpoint(reader)


def test_validate_tolerates_redundant_tied_head(arch_model: ArchModel, tmp_path: Path) -> None:
    src = arch_model("qwen2")  # tied
    with CheckpointReader(src) as r:
        emb = r.get("model.embed_tokens.weight")
    d = _resave(src, tmp_path / "with_head", {"lm_head.weight": emb.clone()})
    with CheckpointReader(d) as reader:
        validate_checkpoint(reader)
        inv = inventory(reader.config, reader.shapes())
    assert inv["head"] == 0 and inv["total"] == _hf_param_count(src)
