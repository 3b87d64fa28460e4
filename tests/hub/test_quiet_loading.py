"""transformers' progress bars stay off around lmbricks' loads and saves, and only there."""

from __future__ import annotations

from pathlib import Path

import pytest

BARS = ("Loading weights", "Writing model shards")


def test_our_loads_and_saves_print_no_bar(tiny_llama: Path, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    from transformers import Qwen3Config

    from lmbricks.hub import load_hf_model
    from lmbricks.nn.load import load_model
    from lmbricks.testing import save_tiny_model, tiny_llama_config

    qwen3 = Qwen3Config(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=16)  # fmt: skip
    capfd.readouterr()
    load_hf_model(tiny_llama)
    save_tiny_model(tmp_path / "perturbed", tiny_llama_config(), seed=1, perturb_from=tiny_llama, noise=0.01)
    model, _ = load_model(save_tiny_model(tmp_path / "qwen3", qwen3))  # not lmbricks.nn's: transformers loads it
    assert type(model).__name__ == "Qwen3ForCausalLM"
    err = capfd.readouterr().err
    assert not [bar for bar in BARS if bar in err], err


def test_the_switch_is_put_back_for_the_users_own_calls(tiny_llama: Path, capfd: pytest.CaptureFixture) -> None:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from lmbricks.hub import load_hf_model
    from lmbricks.hub.hf_compat import quiet_loading

    assert hf_logging.is_progress_bar_enabled()
    load_hf_model(tiny_llama)
    capfd.readouterr()
    AutoModelForCausalLM.from_pretrained(tiny_llama)  # the user's own call, after one of ours: its bar shows
    assert "Loading weights" in capfd.readouterr().err
    # nested, and with huggingface_hub's bars off beforehand: each switch comes back as it was
    disable_progress_bars()
    try:
        with quiet_loading():
            with quiet_loading():
                assert not hf_logging.is_progress_bar_enabled()
            assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
    finally:
        enable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        with quiet_loading():
            pass
        assert not hf_logging.is_progress_bar_enabled()  # off before, off after
    finally:
        hf_logging.enable_progress_bar()
