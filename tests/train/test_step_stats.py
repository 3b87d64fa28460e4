"""StepStats: sums by field, one flat layout for the all-reduce, and the log line made from it."""

from __future__ import annotations

import pytest
import torch

from lmbricks.train.config import TrainConfig
from lmbricks.train.distributed import DistInfo
from lmbricks.train.setup import resolve_precision
from lmbricks.train.stats import StepStats, log_record

ALONE = DistInfo(rank=0, world=1, device=torch.device("cpu"))


def _stats(scale: float) -> StepStats:
    return StepStats(
        torch.tensor(2.0 * scale),
        {"switch": torch.tensor(1.0 * scale), "z": torch.tensor(0.5 * scale)},
        torch.tensor([0.1, 0.3]) * scale,
        torch.tensor([[3.0, 1.0, 0.0], [2.0, 2.0, 0.0]]) * scale,
    )


def test_pack_then_unpack_gives_the_fields_back() -> None:
    s = _stats(1.0)
    flat = s.pack()
    assert flat.shape == (1 + 2 + 2 + 6,)
    back = s.unpack(flat)
    assert list(back.aux) == ["switch", "z"]
    assert torch.equal(back.lm_loss, s.lm_loss) and torch.equal(back.dropped, s.dropped)
    assert torch.equal(back.tokens_per_expert, s.tokens_per_expert)
    assert back.aux["z"].item() == 0.5
    alone = s.all_reduce(ALONE)
    assert torch.equal(alone.pack(), flat)


def test_sum_is_by_field_and_dense_stats_are_empty() -> None:
    total = _stats(1.0) + _stats(2.0)
    assert torch.equal(total.pack(), _stats(3.0).pack())
    dense = StepStats(torch.tensor(1.0), {}, torch.zeros(0), torch.zeros(0, 0))
    assert dense.moe_layers == 0 and dense.pack().shape == (1,)
    assert dense.unpack(torch.tensor([4.0])).lm_loss.item() == 4.0


def test_log_record_means_over_micro_batches_and_layers() -> None:
    rec = log_record(5, _stats(2.0), n_micro=2, lr=0.1, grad_norm=torch.tensor(1.5), tokens_per_s=10.04, tokens_seen=64)
    assert rec["step"] == 5 and rec["loss"] == 2.0 and rec["grad_norm"] == 1.5 and rec["lr"] == 0.1
    assert rec["aux"] == {"switch": pytest.approx(0.5), "z": pytest.approx(0.25)}  # / (2 micro x 2 layers)
    assert rec["dropped_fraction"] == pytest.approx(0.2)
    assert rec["expert_load"] == [[0.75, 0.25, 0.0], [0.5, 0.5, 0.0]]
    assert rec["expert_load_max_over_mean"] == [round(3 / (4 / 3), 4), 1.5]
    assert rec["tokens_per_s"] == 10.0 and rec["tokens"] == 64
    dense = log_record(1, StepStats(torch.tensor(3.0), {}, torch.zeros(0), torch.zeros(0, 0)), 3, 0.1, None, 1.0, 8)
    assert list(dense) == ["step", "loss", "lr", "tokens_per_s", "tokens"]


def test_precision_auto_is_resolved_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbricks.runtime import cpu_flags, precision

    base = {"model": {"hidden_size": 8}, "tokenizer": "t", "data": {"domains": ["code"]}, "steps": 1, "batch_size": 1}
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "_this_cpu_flags", lambda: cpu_flags("flags\t: fpu avx2 avx512f"))
    assert resolve_precision(TrainConfig.model_validate(base), cpu) == "fp32"  # no native bf16: fp32
    monkeypatch.setattr(precision, "_this_cpu_flags", lambda: cpu_flags("flags\t: fpu avx512f avx512_bf16"))
    assert resolve_precision(TrainConfig.model_validate(base), cpu) == "bf16"  # AVX512-BF16: autocast
    assert resolve_precision(TrainConfig.model_validate({**base, "precision": "bf16"}), cpu) == "bf16"
    assert resolve_precision(TrainConfig.model_validate({**base, "precision": "fp32"}), cpu) == "fp32"
