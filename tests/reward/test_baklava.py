"""WARM's Baklava variant: members initialised from successive checkpoints of one SFT run.

The checkpoints must share the frozen trunk (their cached features are the base's); a checkpoint
whose lower layers moved is refused naming the tensor. With every init equal to the base,
Baklava is exactly plain WARM; the feature cache reproduces the computed features.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmbricks.errors import ConfigError
from lmbricks.reward import Pair, RewardTrainConfig, encode_pairs, pair_accuracy, precompute, run_warm, score_features
from lmbricks.reward.warm import baklava_top_state, base_reward_model


def _pairs(n: int, offset: int = 0) -> list[Pair]:
    return [
        Pair(f"q{i}", "hi, how are you? " * (1 + i % 3), "Bonjour le monde" + " x" * (i % 4))
        for i in range(offset, offset + n)
    ]


def _checkpoint(base: Path, out: Path, layer: int, seed: int) -> Path:
    """A fake SFT checkpoint of ``base``: Gaussian noise added to one layer only."""
    from lmbricks.nn import load_model, save_model

    lm, tok = load_model(base, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lm.layers[layer].parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return save_model(lm, out, tok)


def _cfgs(m: int) -> list[RewardTrainConfig]:
    return [RewardTrainConfig(lr=5e-3, epochs=2, batch_size=4, seed=i, trainable_layers=1) for i in range(m)]


def test_baklava_top_state_checks_the_shared_trunk(tiny_llama: Path, tmp_path: Path) -> None:
    rm, _ = base_reward_model(str(tiny_llama))
    top_ok = _checkpoint(tiny_llama, tmp_path / "step-2", layer=1, seed=1)
    state = baklava_top_state(rm, top_ok, start=1)
    assert set(state) == {k for k in rm.state_dict() if k.startswith(("backbone.layers.1.", "backbone.norm.", "head."))}
    moved = [k for k, v in state.items() if not torch.equal(v, rm.state_dict()[k])]
    assert moved and all(k.startswith("backbone.layers.1.") for k in moved)
    bad = _checkpoint(tiny_llama, tmp_path / "bad", layer=0, seed=2)
    with pytest.raises(ConfigError, match=r"backbone\.layers\.0\..* differs.*train_last_layers"):
        baklava_top_state(rm, bad, start=1)


def test_baklava_members_start_from_their_checkpoints(tiny_llama: Path, tmp_path: Path) -> None:
    ckpts = [_checkpoint(tiny_llama, tmp_path / f"step-{s}", layer=1, seed=s) for s in (2, 4)]
    evals = {"held_out": _pairs(12, offset=24)}
    cache = tmp_path / "features.pt"
    plain = run_warm(str(tiny_llama), _pairs(24), evals, _cfgs(2), tmp_path / "warm", use_merge=False,
                     feature_cache=cache)  # fmt: skip
    assert cache.exists()
    # every init equal to the base: exactly plain WARM (and the cached features give the same numbers)
    same = run_warm(str(tiny_llama), _pairs(24), evals, _cfgs(2), tmp_path / "same", use_merge=False,
                    inits=[tiny_llama], feature_cache=cache)  # fmt: skip
    assert same["histories"] == plain["histories"] and same["warm"] == plain["warm"]
    # Baklava: each member starts from its checkpoint, so the training curves differ from plain WARM
    bak = run_warm(str(tiny_llama), _pairs(24), evals, _cfgs(2), tmp_path / "bak", use_merge=True,
                   inits=ckpts, feature_cache=cache)  # fmt: skip
    assert [c["init"] for c in bak["member_configs"]] == [str(c) for c in ckpts]
    for i in range(2):
        assert bak["histories"][i][0] != plain["histories"][i][0]
    assert bak["merge_vs_memory_max_abs_diff"] < 1e-6
    # independently of that self-check: the written WARM model is the mean of the written members,
    # tensor by tensor, and its held-out accuracy is the one reported
    from lmbricks.reward import load_reward_model

    members = [load_reward_model(tmp_path / "bak" / "members" / f"m{i}")[0].state_dict() for i in range(2)]
    warm_rm, tok = load_reward_model(tmp_path / "bak" / "warm")
    warm = warm_rm.state_dict()
    assert warm.keys() == members[0].keys()
    for k, v in warm.items():
        torch.testing.assert_close(v, (members[0][k] + members[1][k]) / 2, rtol=1e-6, atol=1e-7, msg=k)
    assert any(not torch.equal(members[0][k], members[1][k]) for k in warm)
    enc = encode_pairs(tok, evals["held_out"], _cfgs(1)[0].max_len)
    with torch.no_grad():
        s = score_features(warm_rm.eval(), precompute(warm_rm, enc.chosen + enc.rejected, 0), 0)
    n = len(evals["held_out"])
    assert bak["warm"]["held_out"]["accuracy"] == pytest.approx(pair_accuracy(s[:n], s[n:]))
    assert json.loads((tmp_path / "bak" / "results.json").read_text())["member_configs"][1]["init"] == str(ckpts[1])
    with pytest.raises(ConfigError, match="features of another split"):
        run_warm(str(tiny_llama), _pairs(20), evals, _cfgs(1), tmp_path / "x", use_merge=False, feature_cache=cache)
