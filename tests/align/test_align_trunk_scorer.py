"""The shared-trunk scorer of the over-optimisation experiment scores as each full reward model does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.align.scorer import SharedTrunkScorer
from lmbricks.errors import ConfigError
from lmbricks.reward.model import pad_right
from lmbricks.reward.train import render_pair_text
from lmbricks.reward.warm import base_reward_model, trained_keys


def _tops(rm: torch.nn.Module, start: int) -> dict[str, dict[str, torch.Tensor]]:
    """Three reward models differing above layer ``start`` (random perturbations of the top)."""
    keys = trained_keys(rm, start)  # type: ignore[arg-type]
    base = {k: v.clone() for k, v in rm.state_dict().items() if k in keys}
    out = {}
    for i, name in enumerate(["gold", "a", "b"]):
        gen = torch.Generator().manual_seed(i)
        out[name] = {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    return out


def test_shared_trunk_scores_equal_each_full_reward_model(tiny_llama: Path) -> None:
    rm, tok = base_reward_model(str(tiny_llama))
    rm.eval()
    start = rm.num_layers - 1
    tops = _tops(rm, start)
    prompts, responses = ["Hello", "2 + 2 =", "Hello"], ["there friend", "4", "a much longer answer than that"]
    scorer = SharedTrunkScorer(rm, tok, start, tops, ["a", "b"], precision="fp32")
    got = scorer(prompts, responses)  # (3,)
    texts = [render_pair_text(tok, p, r, "plain") for p, r in zip(prompts, responses, strict=True)]
    ids, lengths = pad_right([torch.tensor(tok(t, add_special_tokens=False)["input_ids"]) for t in texts])
    want = {}
    for name, state in tops.items():
        rm.load_state_dict(state, strict=False)
        with torch.no_grad():
            want[name] = rm(ids, lengths)  # (3,) the whole model, trunk included
        torch.testing.assert_close(scorer.last[name], want[name], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, (want["a"] + want["b"]) / 2, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(want["a"], want["b"])  # the tops differ, so the identity is not vacuous


def test_unknown_target_is_refused(tiny_llama: Path) -> None:
    rm, tok = base_reward_model(str(tiny_llama))
    tops = _tops(rm, rm.num_layers - 1)
    with pytest.raises(ConfigError, match="warm"):
        SharedTrunkScorer(rm, tok, rm.num_layers - 1, tops, ["warm"])
    with pytest.raises(ConfigError, match="none"):
        SharedTrunkScorer(rm, tok, rm.num_layers - 1, tops, [])
