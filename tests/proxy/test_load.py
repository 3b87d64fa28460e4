"""Proxy members in a precision: a brick is merged in fp32, then the merged weights are cast once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.proxy.load import load_member, load_trio


@pytest.fixture()
def brick(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from tests.adapters.conftest import make_brick

    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))
    return make_brick(tiny_llama, tmp_path / "brick", seed=3)


def test_bf16_member_is_the_fp32_merge_rounded_once(tiny_llama: Path, brick: Path) -> None:
    fp32 = load_member(tiny_llama, brick=brick).model.state_dict()
    bf16 = load_member(tiny_llama, brick=brick, dtype=torch.bfloat16).model.state_dict()
    plain = load_member(tiny_llama).model.state_dict()
    assert fp32.keys() == bf16.keys()
    merged = [k for k in fp32 if not torch.equal(fp32[k], plain[k])]
    assert any("down_proj" in k for k in merged)  # the brick changed the weights it targets
    for key, value in fp32.items():
        assert bf16[key].dtype == torch.bfloat16
        assert torch.equal(bf16[key], value.to(torch.bfloat16)), key  # rounded once, after the fp32 merge


def test_trio_passes_the_dtype_to_every_member(tiny_llama: Path, brick: Path) -> None:
    b, e, a = load_trio(tiny_llama, None, tiny_llama, expert_brick=brick, dtype=torch.bfloat16)
    assert e is not None and a is not None
    assert {m.model.get_input_embeddings().weight.dtype for m in (b, e, a)} == {torch.bfloat16}
    # the expert is the anti-expert plus the brick; the base and the anti-expert stay the plain model
    plain = load_member(tiny_llama, dtype=torch.bfloat16).model.state_dict()
    merged = load_member(tiny_llama, brick=brick, dtype=torch.bfloat16).model.state_dict()
    for member, want in ((b, plain), (a, plain), (e, merged)):
        got = member.model.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)
