"""``lmbricks plan --ranks``: memory per rank and bytes sent per step, against hand-computed numbers."""

from __future__ import annotations

import json
import subprocess

import pytest
from train_helpers import CLI, cli_env

from lmbricks.errors import ConfigError
from lmbricks.nn import LMConfig
from lmbricks.train.layout_plan import LayoutSpec, parse_bytes, plan_layout

# vocab 100, h 16, 2 layers, 4 heads of 4 (q 16), 2 kv heads (kv 8), 4 experts of 8, top-2, untied head
CFG = LMConfig(
    vocab_size=100,
    hidden_size=16,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=40,
    moe={"num_experts": 4, "top_k": 2, "intermediate_size": 8},
)
# parameters: embedding 1600 + head 1600 + attention 2 x (16 x 32 + 16 x 16 = 768) + norms 80
#   + experts 2 x 4 x (3 x 16 x 8 = 384) = 3072 + routers 2 x 64 = 8016; non-expert 4944
# activations per token (bf16): final norm 2 x 16 x 2 = 64; per layer attention (32 + 32 + 16) x 2 = 160
#   and MoE (32 + 2 x (32 + 24)) x 2 + 4 x 4 (fp32 logits) = 304 -> 2 x 464 + 64 = 992 B
# a micro-batch of 2 x 8 tokens keeps 16 x 992 = 15872 B
ACTS = 15872


def _spec(**kw: object) -> LayoutSpec:
    return LayoutSpec(micro_batch_size=2, seq_len=8, activation_bytes=2, **kw)  # type: ignore[arg-type]


def test_ddp_holds_everything_and_all_reduces_fp32_gradients() -> None:
    p = plan_layout(CFG, _spec(ranks=2))
    assert (p.parameters, p.gradients, p.optimizer) == (8016 * 4, 8016 * 4, 8016 * 8)
    assert p.activations == ACTS and p.total == 8016 * 16 + ACTS
    assert p.sent_gradients == 2 * (1 / 2) * 8016 * 4 and p.sent_expert_all_to_all == 0


def test_fsdp_shards_and_gathers_the_root_and_two_blocks() -> None:
    p = plan_layout(CFG, _spec(ranks=2, fsdp=True))
    assert p.parameters == 4008 * 4 and p.optimizer == 4008 * 8
    # root 1600 + 1600 + 16, largest block 768 + 32 + 1536 + 64 = 2400, two of them, in bf16
    assert p.gathered == (3216 + 2 * 2400) * 2
    assert p.total == 4008 * 16 + 16032 + ACTS
    assert p.sent_parameter_gather == 2 * (1 / 2) * 8016 * 2 and p.sent_gradients == (1 / 2) * 8016 * 4


def test_experts_shard_only_the_experts_and_send_the_routed_rows() -> None:
    # 4 ranks, expert groups of 2 (2 replicas), batch 16 = 2 micro-batches of 2 per rank
    p = plan_layout(CFG, _spec(ranks=4, expert_ranks=2, batch_size=16), memory_per_rank=119552)
    assert p.parameters == (4944 + 3072 / 2) * 4
    assert p.total == 6480 * 16 + ACTS == 119552 and p.fits is True
    # 4 all-to-alls x 16 tokens x 2 rows x 1/2 to the other rank x 16 x 2 B, x 2 layers x 2 micro-batches
    assert p.sent_expert_all_to_all == 4 * 16 * 2 * 0.5 * 16 * 2 * 2 * 2 == 8192
    assert p.sent_gradients == 2 * (3 / 4) * 4944 * 4 + 2 * (1 / 2) * 1536 * 4
    assert p.sent_total == p.sent_gradients + 8192 and p.sent_parameter_gather == 0
    assert plan_layout(CFG, _spec(ranks=4, expert_ranks=2, batch_size=16), memory_per_rank=119551).fits is False


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_spec(ranks=4, expert_ranks=3), "must divide num_experts"),
        (_spec(ranks=3, expert_ranks=2), "must divide num_experts .* and --ranks"),
        (_spec(ranks=2, expert_ranks=2, fsdp=True), "cannot be combined"),
        (_spec(ranks=2, batch_size=6), "not a multiple"),
    ],
)
def test_layouts_that_do_not_divide_are_refused(spec: LayoutSpec, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_layout(CFG, spec)


def test_parse_bytes() -> None:
    assert parse_bytes("80GB") == 80e9 and parse_bytes("512mb") == 512e6 and parse_bytes("1024") == 1024.0
    with pytest.raises(ConfigError, match="--memory-per-rank"):
        parse_bytes("much")


def test_cli_plan_layout_from_a_training_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    y = tmp_path / "train.yaml"
    y.write_text(
        "model: {vocab_size: 100, hidden_size: 16, num_layers: 2, num_heads: 4, num_kv_heads: 2,\n"
        "  intermediate_size: 40, moe: {num_experts: 4, top_k: 2, intermediate_size: 8}}\n"
        "tokenizer: lmbricks-tiny\ndata: {text_files: [x.txt], seq_len: 8}\n"
        "batch_size: 16\nmicro_batch_size: 2\n"
    )
    args = [*CLI, "plan", "--config", str(y), "--ranks", "4", "--experts-per-rank", "2"]
    res = subprocess.run([*args, "--json"], capture_output=True, text=True, env=cli_env(), check=True)
    lay = json.loads(res.stdout)["layout"]
    assert lay["layout"] == "experts 2" and lay["total"] == 119552 and lay["sent_expert_all_to_all"] == 8192
    res = subprocess.run([*args, "--memory-per-rank", "100KB"], capture_output=True, text=True, env=cli_env())
    assert res.returncode == 0 and "does not fit" in res.stdout
