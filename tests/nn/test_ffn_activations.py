"""The dense FFN's activations: swiglu unchanged, each one its formula, and the HF round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, Qwen2Config

from lmbricks.errors import ConfigError
from lmbricks.nn import LM, GatedFFN, LMConfig, load_model, save_model
from lmbricks.nn.ffn import take_activation_l1, track_activation_l1
from lmbricks.testing import save_tiny_model, tiny_llama_config
from lmbricks.train.objective import LossModule

SMALL = dict(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48)
ACTS = {
    "swiglu": F.silu,
    "reglu": F.relu,
    "relu2": lambda g: F.relu(g) * F.relu(g),
    "fatrelu": lambda g: g * (g > 0.05),
}


def test_default_is_swiglu_golden() -> None:
    """Logits of a seeded default model, measured on main before the activation field existed."""
    torch.manual_seed(0)
    m = LM(LMConfig(**SMALL)).eval()
    assert m.cfg.activation == "swiglu"
    with torch.no_grad():
        lg = m(torch.arange(12).reshape(1, 12)).logits
    ref = [0.035942982882261276, -0.0667741522192955, -0.19273985922336578, 0.0806107372045517]
    torch.testing.assert_close(lg[0, -1, :4], torch.tensor(ref), atol=1e-6, rtol=0)
    assert abs(lg.double().abs().sum().item() - 67.4610926573987) < 1e-4


@pytest.mark.parametrize("name", list(ACTS))
def test_each_activation_is_its_formula(name: str) -> None:
    torch.manual_seed(1)
    ffn = GatedFFN(16, 24, name, 0.05 if name == "fatrelu" else 0.0)
    x = torch.randn(3, 5, 16)
    wg, wu = ffn.gate_up.weight[:24], ffn.gate_up.weight[24:]
    want = (ACTS[name](x @ wg.T) * (x @ wu.T)) @ ffn.down.weight.T
    with torch.no_grad():
        got, aux = ffn(x)
    assert aux is None
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_activations_differ() -> None:
    """The names are not aliases of one another (each test above could pass for one shared formula)."""
    torch.manual_seed(1)
    x = torch.randn(4, 16)
    base = GatedFFN(16, 24)
    outs = {}
    for name in ACTS:
        f = GatedFFN(16, 24, name, 0.05 if name == "fatrelu" else 0.0)
        f.load_state_dict(base.state_dict())
        outs[name] = f(x)[0].detach()
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(outs[a], outs[b]), (a, b)


def test_fatrelu_at_zero_is_reglu_bit_for_bit() -> None:
    torch.manual_seed(2)
    a = LM(LMConfig(**SMALL, activation="reglu")).eval()
    b = LM(LMConfig(**SMALL, activation="fatrelu", activation_threshold=0.0)).eval()
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


def test_config_refuses_bad_activation() -> None:
    with pytest.raises(ConfigError, match="activation must be one of"):
        LMConfig(**SMALL, activation="gelu")
    with pytest.raises(ConfigError, match="only used with activation 'fatrelu'"):
        LMConfig(**SMALL, activation="reglu", activation_threshold=0.1)
    with pytest.raises(ConfigError, match="activation_threshold"):
        LMConfig(**SMALL, activation="fatrelu", activation_threshold=-0.1)
    cfg = LMConfig(**SMALL, activation="fatrelu", activation_threshold=0.25)
    assert LMConfig.from_dict(cfg.to_dict()) == cfg


def _hf_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("hidden_act", ["relu", "relu2"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_hf_relu_models_load_and_round_trip(hidden_act: str, family: str, tmp_path: Path) -> None:
    trunk = dict(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, hidden_act=hidden_act)  # fmt: skip
    hf_cfg = tiny_llama_config(hidden_act=hidden_act) if family == "llama" else Qwen2Config(**trunk)
    src = save_tiny_model(tmp_path / "src", hf_cfg, seed=3, noise=0.05)
    ids = torch.randint(0, 384, (2, 20), generator=torch.Generator().manual_seed(0))
    model, tok = load_model(src)
    assert model.cfg.activation == {"relu": "reglu", "relu2": "relu2"}[hidden_act]
    ref = _hf_logits(src, ids)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref, atol=1e-5, rtol=0)
    out = save_model(model, tmp_path / "out", tokenizer=tok)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden_act"] == hidden_act and cfg["lmbricks"]["transformers_exact"] is True
    torch.testing.assert_close(_hf_logits(out, ids), ref, atol=1e-5, rtol=0)


def test_fatrelu_exports_relu_with_threshold_in_section(tmp_path: Path) -> None:
    torch.manual_seed(4)
    cfg = LMConfig(**{**SMALL, "vocab_size": 384}, activation="fatrelu", activation_threshold=0.02)
    model = LM(cfg).eval()
    out = save_model(model, tmp_path / "out")
    hf = json.loads((out / "config.json").read_text())
    assert hf["hidden_act"] == "relu"
    assert hf["lmbricks"]["config"]["activation_threshold"] == 0.02
    assert hf["lmbricks"]["transformers_exact"] is False
    again, _ = load_model(out)
    assert again.cfg.activation == "fatrelu" and again.cfg.activation_threshold == 0.02
    ids = torch.randint(0, 384, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)


def test_moe_family_with_relu_is_refused() -> None:
    from lmbricks.nn import config_from_hf
    from lmbricks.testing import tiny_mixtral_config

    with pytest.raises(ConfigError, match="hidden_act 'relu'"):
        config_from_hf(tiny_mixtral_config(hidden_act="relu").to_dict())


def test_activation_l1_from_the_same_forward() -> None:
    torch.manual_seed(5)
    lm = LM(LMConfig(**SMALL, activation="reglu"))
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    assert take_activation_l1(lm) is None  # off: nothing accumulated
    assert track_activation_l1(lm, True) == 2
    lm.loss(ids)
    got = take_activation_l1(lm)
    # by hand: mean over layers of mean relu(gate) of each layer's FFN input
    acts = []
    hooks = [
        b.ffn.register_forward_hook(lambda mod, inp, _o: acts.append(F.relu(inp[0] @ mod.gate_up.weight[:48].T)))
        for b in lm.layers
    ]
    lm.loss(ids)
    for h in hooks:
        h.remove()
    want = torch.stack([a.abs().mean() for a in acts]).mean()
    assert got is not None
    torch.testing.assert_close(got, want)
    assert take_activation_l1(lm) is not None and take_activation_l1(lm) is None  # the hook run refilled it; reset
    track_activation_l1(lm, False)


def test_loss_module_adds_the_penalty() -> None:
    torch.manual_seed(6)
    lm = LM(LMConfig(**SMALL, activation="reglu"))
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    plain, stats0 = LossModule(lm, 0.0, 0.0)(ids)
    assert "activation_l1" not in stats0.aux
    mod = LossModule(lm, 0.0, 0.0, activation_l1_coef=0.5)
    total, stats = mod(ids)
    l1 = stats.aux["activation_l1"]
    assert l1 > 0
    torch.testing.assert_close(total, plain + 0.5 * l1)
    mod.activation_l1_coef = 0.0
    again, _ = mod(ids)
    assert torch.equal(again, plain)
    assert all(not b.ffn.track_l1 for b in lm.layers)
