"""Best-of-n: the analytic KL, argmax picks, best-of-1 = a policy sample, reward ensembles, refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lmbricks.align import BestOfNJob, RewardEnsemble, best_of_n, bon_kl, load_reward_ensemble, text_scorer
from lmbricks.align.bon import parse_ns
from lmbricks.align.config import load_prompts
from lmbricks.align.pipeline import run_best_of_n
from lmbricks.align.sample import encode_policy_prompts, sample_responses
from lmbricks.errors import ConfigError
from lmbricks.nn.load import load_model
from lmbricks.reward import Pair, load_reward_model, write_pairs
from lmbricks.testing import build_tiny_tokenizer


def test_bon_kl_is_log_n_minus_n_minus_1_over_n() -> None:
    assert bon_kl(1) == 0.0
    assert bon_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert bon_kl(64) == pytest.approx(math.log(64) - 63 / 64)
    with pytest.raises(ConfigError):
        bon_kl(0)


def test_best_of_n_takes_the_argmax_of_the_first_n() -> None:
    scores = torch.tensor([[0.0, 5.0, 1.0, 9.0], [3.0, 3.0, 2.0, 1.0]])
    one, two, four = best_of_n(scores, [1, 2, 4])
    assert one.picks == [0, 0] and one.rewards == [0.0, 3.0]
    assert two.picks == [1, 0] and two.mean_reward == pytest.approx(4.0)  # tie -> the earliest
    assert four.picks == [3, 0] and four.mean_reward == pytest.approx(6.0)
    with pytest.raises(ConfigError, match="n = 5"):
        best_of_n(scores, [5])


def test_parse_ns() -> None:
    assert parse_ns("4,1,2,2") == [1, 2, 4]
    with pytest.raises(ConfigError, match="'x'"):
        parse_ns("1,x")


def _prompts(tmp_path: Path) -> Path:
    f = tmp_path / "prompts.txt"
    f.write_text("The quick brown fox\nHello\n\ndef main(): return\n")
    return f


def _job(policy: Path, prompts: Path, **kw: object) -> BestOfNJob:
    data = {"policy": str(policy), "prompts": str(prompts), "ns": [1, 2, 8],
            "sampling": {"max_new_tokens": 8, "batch_size": 8}, "seed": 5, "precision": "fp32", **kw}  # fmt: skip
    return BestOfNJob.model_validate(data)


def test_best_of_1_is_the_policy_sample_with_the_same_seed(tiny_llama: Path, tmp_path: Path) -> None:
    job = _job(tiny_llama, _prompts(tmp_path), ns=[1])
    res = run_best_of_n(job, scorer=text_scorer(lambda _p, r: len(r)))
    model, tok = load_model(tiny_llama, hf_fallback=False)
    ids = encode_policy_prompts(tok, load_prompts(job.prompts), chat=False)
    direct = sample_responses(model, tok, ids, 1, job.sampling, seed=5)
    assert res.best == [t[0] for t in direct.texts]
    assert res.per_n[0].kl == 0.0


def test_best_of_n_picks_the_argmax_of_a_known_reward(tiny_llama: Path, tmp_path: Path) -> None:
    def fn(_p: str, r: str) -> float:
        return r.count("e") - 0.01 * len(r)

    res = run_best_of_n(_job(tiny_llama, _prompts(tmp_path)), scorer=text_scorer(fn))
    for i, texts in enumerate(res.samples.texts):
        assert len(texts) == 8
        assert fn("", res.best[i]) == max(fn("", t) for t in texts)
        for b in res.per_n:  # each n: the best of the first n samples
            assert b.rewards[i] == pytest.approx(max(fn("", t) for t in texts[: b.n]))
    means = [b.mean_reward for b in res.per_n]
    assert means == sorted(means)  # nested sets: never worse with more samples
    assert [b["n"] for b in res.to_dict()["per_n"]] == [1, 2, 8]


def test_ensemble_is_the_mean_of_its_members(tiny_llama: Path, tiny_rms: list[Path]) -> None:
    _, tok = load_model(tiny_llama, hf_fallback=False)
    ens = load_reward_ensemble(tiny_rms, tok)
    ps, rs = ["Hello", "The quick"], ["hi, how are you?", "brown fox jumps"]
    singles = [RewardEnsemble([load_reward_model(p)[0]], tok)(ps, rs) for p in tiny_rms]
    torch.testing.assert_close(ens(ps, rs), (singles[0] + singles[1]) / 2)
    assert not torch.allclose(singles[0], singles[1])


def test_reward_models_score_best_of_n(tiny_llama: Path, tiny_rms: list[Path], tmp_path: Path) -> None:
    res = run_best_of_n(_job(tiny_llama, _prompts(tmp_path), reward_models=[str(p) for p in tiny_rms]))
    assert res.scorer == [str(p) for p in tiny_rms]
    assert res.per_n[-1].mean_reward >= res.per_n[0].mean_reward


def test_bad_inputs_are_refused_before_work(tiny_llama: Path, tiny_rms: list[Path], tmp_path: Path) -> None:
    prompts = _prompts(tmp_path)
    with pytest.raises(ConfigError, match="no reward model"):
        run_best_of_n(_job(tiny_llama, prompts))
    with pytest.raises(ConfigError, match="no such directory"):
        run_best_of_n(_job(tiny_llama, prompts, reward_models=[str(tmp_path / "nope")]))
    with pytest.raises(ConfigError, match="not a reward model directory"):
        run_best_of_n(_job(tiny_llama, prompts, reward_models=[str(tiny_llama)]))
    with pytest.raises(ConfigError, match="no such file"):
        run_best_of_n(_job(tiny_llama, tmp_path / "missing.txt", reward_models=[str(tiny_rms[0])]))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match="no prompt found"):
        run_best_of_n(_job(tiny_llama, empty, reward_models=[str(tiny_rms[0])]))


def test_reward_model_with_another_vocabulary_is_refused(
    tiny_llama: Path, tiny_rms: list[Path], tmp_path: Path
) -> None:
    import shutil

    other = tmp_path / "rm_other_vocab"
    shutil.copytree(tiny_rms[0], other)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (other / f).unlink(missing_ok=True)
    build_tiny_tokenizer(300).save_pretrained(other)
    with pytest.raises(ConfigError, match="rm_other_vocab: its vocabulary has 300 tokens, the policy.s 384"):
        run_best_of_n(_job(tiny_llama, _prompts(tmp_path), reward_models=[str(other)]))


def test_prompts_from_pairs_and_jsonl(tmp_path: Path) -> None:
    pairs = write_pairs([Pair("p1", "a", "b"), Pair("p1", "c", "d"), Pair("p2", "e", "f")], tmp_path / "pairs.jsonl")
    assert load_prompts(str(pairs)) == ["p1", "p2"]
    f = tmp_path / "prompts.jsonl"
    f.write_text('{"prompt": "x"}\n{"prompt": "y"}\n')
    assert load_prompts(str(f), limit=1) == ["x"]
    f.write_text('{"text": "x"}\n')
    with pytest.raises(ConfigError, match="record 1"):
        load_prompts(str(f))
