"""``sparsify evaluate``: the continuation NLL is the model's, 100% kept changes nothing, the CLI, bad inputs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from lmbricks.cli.main import app
from lmbricks.errors import ConfigError
from lmbricks.nn.load import load_model
from lmbricks.sparsify.arms import Method, continuation_nll
from lmbricks.sparsify.evaluate import SparsifyEvalConfig, run_sparsify_eval, windows

_rng = random.Random(0)
TEXT = " ".join(_rng.choice(["the", "cat", "dog", "runs", "sat", "on", "a", "mat", "fast", "red"]) for _ in range(3000))


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    p = tmp_path / "held.txt"
    p.write_text(TEXT)
    return p


def test_continuation_nll_is_the_full_forward_nll(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    model = model.double()
    window = torch.randint(3, 384, (20,), generator=torch.Generator().manual_seed(0))
    got = continuation_nll(model, window, 12, [1.0, 0.5], Method("griffin"))
    with torch.no_grad():
        logits = model(window[None]).logits[0]  # (20, V): position t predicts token t + 1
    ref = float(F.cross_entropy(logits[11:19], window[12:], reduction="sum"))
    assert got["dense"] == pytest.approx(ref, rel=1e-9)
    assert got["keep=1"] == got["dense"]  # every neuron kept: the same computation, bit for bit
    assert got["keep=0.5"] != got["dense"]


def test_windows_are_consecutive_and_bounded() -> None:
    ids = torch.arange(25)
    ws = windows(ids, 10, 5)
    assert [w.tolist() for w in ws] == [list(range(10)), list(range(10, 20))]


def test_run_writes_results_and_keep_one_costs_nothing(tiny_llama: Path, tmp_path: Path, text_file: Path) -> None:
    cfg = SparsifyEvalConfig(
        model=str(tiny_llama), out=tmp_path / "g", keep=[1.0, 0.25], text_files=[text_file], sequences=2,
        prompt_tokens=24, continuation_tokens=8, decode_tokens=3, rounds=2, precision="fp32",
    )  # fmt: skip
    result = run_sparsify_eval(cfg)
    assert result.ppl_change["keep=1"] == {"held": 0.0, "mean": 0.0}
    assert result.scored_tokens == {"held": 16}
    assert set(result.decode_tok_s) == {"dense", "keep=1", "keep=0.25"}
    assert result.prune_ms["keep=0.25"] > result.prune_ms["dense"]  # the selection and restriction cost
    saved = json.loads((tmp_path / "g" / "results.json").read_text())
    assert saved["ppl_change"] == result.ppl_change and saved["nll"] == result.nll
    assert (tmp_path / "g" / "lmbricks.json").exists()


def test_cli_end_to_end(tiny_llama: Path, tmp_path: Path, text_file: Path) -> None:
    out = tmp_path / "cli"
    args = ["sparsify", "evaluate", str(tiny_llama), str(out), "--keep", "0.5", "--text-file", str(text_file),
            "--sequences", "1", "--prompt-tokens", "16", "--continuation-tokens", "8", "--decode-tokens", "2",
            "--rounds", "1"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "keep=0.5: perplexity" in res.output and "tokens/s" in res.output
    assert "keep=0.5" in json.loads((out / "results.json").read_text())["ppl_change"]
    again = CliRunner().invoke(app, args)  # an existing output is refused without --force
    assert again.exit_code == 2 and "exists" in again.output


def test_bad_inputs_are_refused_before_work(tiny_llama: Path, tmp_path: Path, text_file: Path) -> None:
    base = {"model": str(tiny_llama), "text_files": [text_file], "prompt_tokens": 16, "continuation_tokens": 8}
    with pytest.raises(ConfigError, match="keep"):
        SparsifyEvalConfig.model_validate({**base, "out": tmp_path / "o", "keep": [0.0]})
    with pytest.raises(ConfigError, match="no such file"):
        run_sparsify_eval(SparsifyEvalConfig.model_validate({**base, "out": tmp_path / "o", "text_files": ["nope"]}))
    with pytest.raises(ConfigError):
        run_sparsify_eval(SparsifyEvalConfig.model_validate({**base, "out": tiny_llama}))  # output == input
    assert (tiny_llama / "config.json").exists()
    with pytest.raises(ConfigError, match="fewer than"):
        run_sparsify_eval(SparsifyEvalConfig.model_validate({**base, "out": tmp_path / "o", "prompt_tokens": 10**6}))
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(app, ["sparsify", "evaluate", str(tiny_llama), str(tmp_path / "o"), "--keep", "2"])
    assert res.exit_code == 2 and "keep" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["sparsify", "evaluate", str(tiny_llama), str(tmp_path / "o"), "--method", "dejavu"])
    assert res.exit_code == 2 and "method" in res.output and "Traceback" not in res.output


def test_cats_arm_nll_and_thresholds(tiny_llama: Path, tmp_path: Path, text_file: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    model = model.double()
    window = torch.randint(3, 384, (20,), generator=torch.Generator().manual_seed(0))
    zero = continuation_nll(model, window, 12, [1.0], Method("cats", {1.0: [0.0, 0.0]}))
    assert zero["keep=1"] == zero["dense"]  # threshold 0: the dense model
    cfg = SparsifyEvalConfig(
        model=str(tiny_llama), out=tmp_path / "c", method="cats", keep=[0.5], text_files=[text_file], sequences=1,
        prompt_tokens=16, continuation_tokens=8, calibration_tokens=64, decode_tokens=2, rounds=1, precision="fp32",
    )  # fmt: skip
    result = run_sparsify_eval(cfg)
    assert len(result.thresholds["keep=0.5"]) == 2 and all(t > 0 for t in result.thresholds["keep=0.5"])
    assert result.ppl_change["keep=0.5"]["held"] != 0.0
    assert json.loads((tmp_path / "c" / "results.json").read_text())["settings"]["method"] == "cats"


def test_cmoe_arm_all_experts_is_dense(tiny_llama: Path, tmp_path: Path, text_file: Path) -> None:
    cfg = SparsifyEvalConfig(
        model=str(tiny_llama), out=tmp_path / "m", method="cmoe", keep=[1.0, 0.25], text_files=[text_file],
        sequences=1, prompt_tokens=16, continuation_tokens=8, calibration_tokens=64, experts=8, shared_experts=1,
        precision="fp32",
    )  # fmt: skip
    result = run_sparsify_eval(cfg)
    assert abs(result.ppl_change["keep=1"]["held"]) < 1e-6  # all 8 experts: the dense FFN
    assert result.ppl_change["keep=0.25"]["held"] != 0.0
    assert result.decode_tok_s == {}  # a masked computation is not timed
    with pytest.raises(ConfigError, match="shared"):
        SparsifyEvalConfig.model_validate({**cfg.model_dump(), "keep": [0.05]})
