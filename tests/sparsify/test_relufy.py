"""ReLU-fication (lmbricks sparsify relufy): the swap alone, the schedule, exact resume, the CLI, bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lmbricks.cli.main import app
from lmbricks.errors import ConfigError
from lmbricks.nn import load_model
from lmbricks.sparsify import RelufyConfig, relufy
from lmbricks.sparsify.measure import measure
from lmbricks.sparsify.pipeline import swap_activation
from lmbricks.sparsify.schedule import l1_factor, threshold_for_sparsity

TEXT = "the quick brown fox jumps over the lazy dog while the cat watches. " * 300


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    p = tmp_path / "train.txt"
    p.write_text(TEXT)
    return p


def _cfg(src: Path, out: Path, text: Path, **kw: object) -> RelufyConfig:
    base = dict(
        model=str(src),
        out=out,
        text_files=[text],
        batch_size=4,
        seq_len=32,
        eval_every=2,
        eval_tokens=64,
        checkpoint_every=2,
        warmup_steps=0,
        lr=1e-3,
        l1_factor=0.1,
        l1_increase_steps=3,
    )
    return RelufyConfig.model_validate({**base, **kw})


def _tensors(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / "model.safetensors"))


def test_schedule_values() -> None:
    assert [round(l1_factor(s, 2.0, 4), 6) for s in range(6)] == [
        round(2.0 * math.sin(math.pi / 2 * x), 6) for x in (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
    ]
    assert l1_factor(0, 0.5, 0) == 0.5
    assert l1_factor(10, 0.0, 4) == 0.0
    g = torch.tensor([-2.0, -1.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert threshold_for_sparsity(g, 0.5) == 2.0  # 5 of 10 values <= 2
    assert threshold_for_sparsity(g, 0.1) == 0.0  # ReLU already zeroes more: never below 0
    t = threshold_for_sparsity(torch.randn(10_000), 0.8)
    assert abs(t - 0.8416) < 0.05  # the standard normal's 0.8 quantile


def test_no_steps_no_l1_is_the_swap_alone(tiny_llama: Path, tmp_path: Path, text_file: Path) -> None:
    r = relufy(_cfg(tiny_llama, tmp_path / "out", text_file, tokens=0, l1_factor=0.0))
    assert r.steps == 0 and r.threshold == 0.0 and r.curve == []
    src, out = _tensors(tiny_llama), _tensors(r.out)
    assert src.keys() == out.keys()
    for k, v in src.items():
        assert torch.equal(v, out[k]), k
    hf = json.loads((r.out / "config.json").read_text())
    assert hf["hidden_act"] == "relu" and hf["lmbricks"]["config"]["activation"] == "reglu"
    assert json.loads((tiny_llama / "config.json").read_text())["hidden_act"] == "silu"  # input untouched


def test_training_lowers_the_gate_magnitude_and_threshold_hits_target(
    tiny_llama: Path, tmp_path: Path, text_file: Path
) -> None:
    r = relufy(_cfg(tiny_llama, tmp_path / "out", text_file, tokens=4 * 32 * 4, target_sparsity=0.85))
    assert r.steps == 4 and r.tokens == 4 * 4 * 32
    assert [p["step"] for p in r.curve] == [0, 2, 4]
    assert r.threshold > 0 and r.final["mean_zero_fraction"] > 0.8
    model, _ = load_model(r.out)
    assert model.cfg.activation == "fatrelu" and model.cfg.activation_threshold == pytest.approx(r.threshold)
    prov = json.loads((r.out / "lmbricks.json").read_text())
    assert "sparsify relufy" in json.dumps(prov)


def test_output_records_its_final_measurement(tiny_llama: Path, tmp_path: Path, text_file: Path) -> None:
    """lmbricks.json holds the output's bits per byte and zeros, re-measured here from the saved model."""
    r = relufy(_cfg(tiny_llama, tmp_path / "out", text_file, tokens=4 * 32 * 2, target_sparsity=0.75))
    rec = json.loads((r.out / "lmbricks.json").read_text())["recipe"]["final_measurement"]
    assert rec["steps"] == 2 and rec["tokens"] == 2 * 4 * 32 and rec["eval_tokens"] == 64 and rec["seq_len"] == 32
    assert rec["texts"] == [str(text_file)]
    model, tok = load_model(r.out)
    again = measure(model, tok, {text_file.stem: TEXT[: 8 * 64]}, 64, 32)  # the saved model, measured anew
    assert rec["bpb"].keys() == again["bpb"].keys() == {text_file.stem}
    for key in ("bpb", "zero_fraction"):
        assert rec[key][text_file.stem] == pytest.approx(again[key][text_file.stem], rel=1e-5, abs=1e-7)
    assert rec["mean_zero_fraction"] == pytest.approx(again["mean_zero_fraction"], rel=1e-5)
    assert rec["mean_zero_fraction"] > 0.7  # after the threshold, not before (ReLU alone gives about half)
    before = measure(swap_activation(model, "reglu"), tok, {text_file.stem: TEXT[: 8 * 64]}, 64, 32)
    assert before["mean_zero_fraction"] < rec["mean_zero_fraction"] - 0.1
    assert rec["mean_bpb"] == pytest.approx(r.final["mean_bpb"])


def test_resume_is_bit_identical(tiny_llama: Path, tmp_path: Path, text_file: Path) -> None:
    whole = relufy(_cfg(tiny_llama, tmp_path / "a", text_file, tokens=4 * 32 * 4, run_dir=tmp_path / "ra"))
    relufy(_cfg(tiny_llama, tmp_path / "b0", text_file, tokens=4 * 32 * 2, run_dir=tmp_path / "rb"))
    resumed = relufy(
        _cfg(tiny_llama, tmp_path / "b", text_file, tokens=4 * 32 * 4, run_dir=tmp_path / "rb", resume=True)
    )
    assert resumed.steps == 4
    a, b = _tensors(whole.out), _tensors(resumed.out)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [p["mean_bpb"] for p in resumed.curve] == [p["mean_bpb"] for p in whole.curve]


def test_cli_end_to_end(tiny_llama: Path, tmp_path: Path, text_file: Path) -> None:
    out = tmp_path / "cli-out"
    args = [
        "sparsify",
        "relufy",
        str(tiny_llama),
        str(out),
        "--text-file",
        str(text_file),
        "--tokens",
        "256",
        "--batch-size",
        "4",
        "--seq-len",
        "32",
        "--eval-every",
        "1",
        "--eval-tokens",
        "64",
        "--threshold",
        "0.05",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "threshold 0.05" in res.output and "zeros" in res.output
    model, _ = load_model(out)
    assert model.cfg.activation == "fatrelu" and model.cfg.activation_threshold == 0.05


def test_bad_inputs_refused_before_work(tiny_llama: Path, tmp_path: Path, text_file: Path) -> None:
    with pytest.raises(ConfigError):
        relufy(_cfg(tmp_path / "no-such-model", tmp_path / "o1", text_file, tokens=0))
    with pytest.raises(ConfigError):
        relufy(_cfg(tiny_llama, tiny_llama, text_file, tokens=0))  # output == input
    assert (tiny_llama / "config.json").exists()
    bad = tmp_path / "nan-model"
    bad.mkdir()
    for f in tiny_llama.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    sd = _tensors(bad)
    sd["model.layers.0.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(sd, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="up_proj|ffn"):
        relufy(_cfg(bad, tmp_path / "o2", text_file, tokens=0))
    assert not (tmp_path / "o2").exists() and not (tmp_path / ".o2.relufy-run").exists()
    with pytest.raises(ConfigError, match="threshold or target_sparsity"):
        _cfg(tiny_llama, tmp_path / "o3", text_file, threshold=0.1, target_sparsity=0.5)
    res = CliRunner().invoke(app, ["sparsify", "relufy", str(tiny_llama), str(tmp_path / "o4"), "--l1-factor", "nan"])
    assert res.exit_code != 0 and "Traceback" not in res.output and "l1_factor" in res.output
