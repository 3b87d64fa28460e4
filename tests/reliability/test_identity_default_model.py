"""The default model's identity survives a library's bookkeeping and no change of content.

Two conversions by transformers 5.23.0 and 5.24.0 gave byte-identical model.safetensors, tokenizer
and template files and config.json files that differ only in ``transformers_version``: before the
content identity their hashes were 34c5f21d... and b13f373e..., and every shipped brick was refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmbricks.adapters import read_brick
from lmbricks.adapters.base import base_model, check_brick_base
from lmbricks.checkpoint.provenance import model_identity
from lmbricks.errors import ConfigError
from lmbricks.hub import REGISTRY, resolve_model

pytestmark = pytest.mark.integration

BRICKS = Path(__file__).resolve().parents[2] / "bricks" / "smollm2-135m-instruct"


def _linked_copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        os.symlink(f, dst / f.name)
    return dst


def test_another_transformers_version_hashes_the_same_and_a_changed_weight_does_not(tmp_path: Path) -> None:
    real = resolve_model("smollm2-135m-instruct")
    identity = model_identity(real)
    assert identity is not None
    assert identity.weights == REGISTRY["smollm2-135m-instruct"].weights_sha256

    other = _linked_copy(real, tmp_path / "other-version")
    config = json.loads((real / "config.json").read_text())
    config["transformers_version"] = "4.46.0" if config.get("transformers_version") != "4.46.0" else "5.0.0"
    (other / "config.json").unlink()
    (other / "config.json").write_text(json.dumps(config, indent=2))
    assert model_identity(other) == identity

    changed = _linked_copy(real, tmp_path / "changed-weight")
    tensors = load_file(real / "model.safetensors")
    w = tensors["model.layers.7.mlp.down_proj.weight"]
    w.view(-1)[123] = w.view(-1)[123] + torch.tensor(0.5, dtype=w.dtype)
    (changed / "model.safetensors").unlink()
    save_file(tensors, changed / "model.safetensors", metadata={"format": "pt"})
    changed_id = model_identity(changed)
    assert changed_id is not None and changed_id.sha256 != identity.sha256
    assert changed_id.differences(identity) == ["weights"]

    # A shipped brick meets the fetched model, and is refused on the changed one, naming the weights.
    info = read_brick(BRICKS / "code")
    check_brick_base(info.name, info.base_sha256, info.base_model, base_model(real), info.base_identity)
    with pytest.raises(ConfigError, match="they differ in weights"):
        check_brick_base(info.name, info.base_sha256, info.base_model, base_model(changed), info.base_identity)
