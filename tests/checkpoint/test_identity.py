"""A model's identity is its content: tensors, architecture fields, tokenizer; never a tool's bookkeeping."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from lmbricks.adapters.base import base_model, check_brick_base
from lmbricks.checkpoint.identity import architecture_fields, config_differences, tokenizer_content
from lmbricks.checkpoint.provenance import content_hash, input_record, model_identity, reference_name
from lmbricks.errors import ConfigError


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LMBRICKS_HOME", str(home))
    return home


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=4))


def test_tool_written_fields_do_not_change_the_identity(tiny_llama: Path, tmp_path: Path) -> None:
    other = _copy(tiny_llama, tmp_path / "other")
    # What another transformers release writes about itself, and another layout of the same file.
    _edit_json(
        other / "config.json",
        transformers_version="9.99.0",
        _name_or_path="/somewhere/else",
        _model_name_or_path="Another Name",
        torch_dtype="float32",
        use_cache=False,
    )
    config = json.loads((other / "config.json").read_text())
    config.pop("dtype", None)
    (other / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
    assert content_hash(other) == content_hash(tiny_llama)


def test_shard_layout_and_header_metadata_do_not_change_the_identity(tiny_llama: Path, tmp_path: Path) -> None:
    tensors = load_file(tiny_llama / "model.safetensors")
    names = sorted(tensors)
    sharded = _copy(tiny_llama, tmp_path / "sharded")
    (sharded / "model.safetensors").unlink()
    half = len(names) // 2
    # Reversed insertion order and another metadata block: the bytes of each tensor are all that count.
    save_file({n: tensors[n] for n in reversed(names[:half])}, sharded / "model-00001-of-00002.safetensors",
              metadata={"format": "pt", "by": "someone"})  # fmt: skip
    save_file({n: tensors[n] for n in names[half:]}, sharded / "model-00002-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {n: f"model-0000{1 + (i >= half)}-of-00002.safetensors"
                                            for i, n in enumerate(names)}}  # fmt: skip
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert content_hash(sharded) == content_hash(tiny_llama)


def test_one_changed_weight_changes_the_identity_and_says_weights(tiny_llama: Path, tmp_path: Path) -> None:
    changed = _copy(tiny_llama, tmp_path / "changed")
    tensors = load_file(changed / "model.safetensors")
    name = sorted(tensors)[3]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, changed / "model.safetensors", metadata={"format": "pt"})
    a, b = model_identity(tiny_llama), model_identity(changed)
    assert a is not None and b is not None
    assert a.sha256 != b.sha256 and a.config == b.config and a.tokenizer == b.tokenizer
    assert b.differences(a) == ["weights"]


def test_a_changed_architecture_field_is_named(tiny_llama: Path, tmp_path: Path) -> None:
    changed = _copy(tiny_llama, tmp_path / "changed")
    cfg = json.loads((changed / "config.json").read_text())
    _edit_json(changed / "config.json", rms_norm_eps=cfg["rms_norm_eps"] * 10)
    a, b = model_identity(tiny_llama), model_identity(changed)
    assert a is not None and b is not None
    assert a.sha256 != b.sha256 and a.weights == b.weights
    assert b.differences(a) == ["config field rms_norm_eps"]
    assert config_differences({"x": {"a": 1, "b": 2}, "transformers_version": "1"}, {"x": {"a": 1, "b": 3}}) == ["x.b"]


def test_tokenizer_content_not_its_spelling(tiny_llama: Path, tmp_path: Path) -> None:
    tok = json.loads((tiny_llama / "tokenizer.json").read_text())
    merges = tok["model"].get("merges") or []
    respelled = _copy(tiny_llama, tmp_path / "respelled")
    # Older tokenizers write merges as "a b" strings, newer ones as pairs: the same merges.
    tok2 = json.loads((respelled / "tokenizer.json").read_text())
    tok2["model"]["merges"] = [m.split(" ", 1) if isinstance(m, str) else m for m in merges]
    (respelled / "tokenizer.json").write_text(json.dumps(tok2))
    assert content_hash(respelled) == content_hash(tiny_llama)
    # A changed vocabulary entry is a different tokenizer.
    changed = _copy(tiny_llama, tmp_path / "changed")
    tok3 = json.loads((changed / "tokenizer.json").read_text())
    vocab = tok3["model"]["vocab"]
    first = next(iter(vocab))
    vocab[first + "X"] = vocab.pop(first)
    (changed / "tokenizer.json").write_text(json.dumps(tok3))
    a, b = model_identity(tiny_llama), model_identity(changed)
    assert a is not None and b is not None and b.differences(a) == ["tokenizer"]
    # The chat template counts wherever it is written.
    moved = _copy(tiny_llama, tmp_path / "moved")
    (moved / "chat_template.jinja").write_text("{{ messages }}")
    assert tokenizer_content(moved)["chat_template"] == "{{ messages }}"
    assert content_hash(moved) != content_hash(tiny_llama)


def test_architecture_fields_drop_bookkeeping_only() -> None:
    cfg = {"hidden_size": 8, "transformers_version": "5", "_name_or_path": "x", "dtype": "bfloat16",
           "text_config": {"hidden_size": 4, "torch_dtype": "float32"}}  # fmt: skip
    assert architecture_fields(cfg) == {"hidden_size": 8, "text_config": {"hidden_size": 4}}


def test_brick_on_another_base_names_the_difference(tiny_llama: Path, tmp_path: Path) -> None:
    recorded = base_model(tiny_llama)
    changed = _copy(tiny_llama, tmp_path / "changed")
    rope = json.loads((changed / "config.json").read_text())["rope_parameters"]
    # transformers 5 reads theta from rope_parameters (a top-level rope_theta beside it is ignored)
    _edit_json(changed / "config.json", rope_parameters={**rope, "rope_theta": 1234.0}, transformers_version="0.0.1")
    other = base_model(changed)
    check_brick_base("b", recorded.sha256, "tiny", recorded, recorded.identity)  # its own base passes
    with pytest.raises(ConfigError, match=r"brick 'b' .* they differ in config field rope_parameters\.rope_theta"):
        check_brick_base("b", recorded.sha256, "tiny", other, recorded.identity)
    with pytest.raises(ConfigError, match="predates identity parts"):
        check_brick_base("b", recorded.sha256, "tiny", other, None)


def test_records_carry_no_machine_path(tiny_llama: Path, tmp_path: Path, _home: Path) -> None:
    out = tmp_path / "runs" / "merged"
    entry = input_record("base", tiny_llama, relative_to=out)
    assert "path" not in entry and not Path(entry["ref"]).is_absolute()
    assert (out / entry["ref"]).resolve() == tiny_llama.resolve()
    assert entry["sha256"] == content_hash(tiny_llama) == entry["identity"]["sha256"]
    cached = _home / "models" / "some-registry-name"
    cached.mkdir(parents=True)
    assert reference_name(cached, relative_to=out) == "some-registry-name"


_DATA = Path(__file__).parent / "data"


def test_a_transformers_4_config_has_the_identity_of_its_transformers_5_spelling() -> None:
    # Both files are the default model's GGUF converted by `from_pretrained(gguf_file=...)` and
    # `save_pretrained`: once with transformers 4.57.1 (rope_theta + rope_scaling: null), once with
    # 5.24.0 (rope_parameters). Only the spelling of RoPE and the tool's own fields differ.
    old = json.loads((_DATA / "smollm2_config_transformers_4.57.1.json").read_text())
    new = json.loads((_DATA / "smollm2_config_transformers_5.24.0.json").read_text())
    assert "rope_theta" in old and "rope_parameters" in new  # the two spellings really are there
    assert config_differences(old, new) == []
    assert architecture_fields(old) == architecture_fields(new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"rope_theta": 1e4, "rope_scaling": None}, {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}),
        (
            {"rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}},
            {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}},
        ),
        (
            {"max_position_embeddings": 8192, "rope_theta": 5e5,
             "rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
            {"max_position_embeddings": 8192, "rope_parameters": {
                "rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5, "original_max_position_embeddings": 8192}},
        ),
    ],
)  # fmt: skip
def test_rope_spellings_agree(old: dict[str, object], new: dict[str, object]) -> None:
    assert architecture_fields(old) == architecture_fields(new)


def test_another_rope_theta_or_factor_still_differs() -> None:
    base = {"rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert config_differences(base, {**base, "rope_theta": 5e5}) == ["rope_parameters.rope_theta"]
    other = {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4}}
    assert config_differences(base, other) == ["rope_parameters.factor"]
    assert config_differences({"rope_theta": 1e4}, {"hidden_size": 8}) == ["hidden_size", "rope_parameters"]


def test_canonical_rope_leaves_its_input_alone() -> None:
    cfg = {"rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}}
    before = json.dumps(cfg)
    architecture_fields(cfg)
    assert json.dumps(cfg) == before
