"""``adapters extract`` agrees with ``mergekit-extract-lora`` (0.1.5) on the same tiny fine-tune.

Both write a PEFT adapter directory; per module the products ``B @ A`` (the rank-r updates) and so the
Frobenius reconstruction errors agree, embeddings saved at full rank are the fine-tune's own tensors, the
per-module ranks under ``--sv-epsilon`` are the same, and PEFT loads both to the same logits.
Needs mergekit in its own virtual environment (``.bench-venvs/mergekit``); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmbricks.adapters.extract import extract_brick
from lmbricks.testing import save_tiny_model, tiny_llama_config

ROOT = Path(__file__).resolve().parents[2]
MERGEKIT_BIN = ROOT / ".bench-venvs" / "mergekit" / "bin"
TARGET_REGEX = r"(q|k|v|o|gate|up|down)_proj$"

pytestmark = pytest.mark.skipif(
    not (MERGEKIT_BIN / "mergekit-extract-lora").exists(),
    reason=f"mergekit venv absent ({MERGEKIT_BIN}); create it with `make mergekit-venv`",
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny Llama and a dense (full-rank) fine-tune of it, embeddings and lm_head changed too."""
    root = tmp_path_factory.mktemp("extract_mk")
    cfg = tiny_llama_config()
    base = save_tiny_model(root / "base", cfg, seed=0)
    return base, save_tiny_model(root / "ft", cfg, seed=1, perturb_from=base, noise=0.02)


def _mergekit(base: Path, ft: Path, out: Path, rank: int, *extra: str) -> Path:
    cmd = [str(MERGEKIT_BIN / "mergekit-extract-lora"), "--model", str(ft), "--base-model", str(base)]
    cmd += ["--out-path", str(out), "--max-rank", str(rank), "-i", TARGET_REGEX, *extra]
    subprocess.run(cmd, check=True, capture_output=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    return out


def _updates(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``({module: B @ A}, {key: full tensor})`` of a PEFT adapter directory."""
    tensors = load_file(str(path / "adapter_model.safetensors"))
    deltas = {
        k.removeprefix("base_model.model.").removesuffix(".lora_A.weight"): tensors[
            k.replace("lora_A", "lora_B")
        ].float()
        @ v.float()
        for k, v in tensors.items()
        if k.endswith(".lora_A.weight")
    }
    full = {k.removeprefix("base_model.model."): v for k, v in tensors.items() if ".lora_" not in k}
    return deltas, full


def _logits(base: Path, adapter: Path) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    ids = torch.arange(3, 40).reshape(1, -1)  # (1, T)
    with torch.no_grad():
        return model(ids).logits  # (1, T, V)


def test_extract_agrees_with_mergekit(pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, ft = pair
    mk = _mergekit(base, ft, tmp_path / "mk", 4)  # embeddings go to modules_to_save by default
    info, ext = extract_brick(ft, base, 4, tmp_path / "lb", modules_to_save=("embed_tokens", "lm_head"))
    mk_delta, mk_full = _updates(mk)
    lb_delta, lb_full = _updates(info.path)
    assert set(mk_delta) == set(lb_delta) and len(lb_delta) == 2 * 7
    base_w, ft_w = load_file(str(base / "model.safetensors")), load_file(str(ft / "model.safetensors"))
    for module, d in lb_delta.items():
        torch.testing.assert_close(d, mk_delta[module], rtol=1e-4, atol=1e-6)
        true = ft_w[f"{module}.weight"] - base_w[f"{module}.weight"]
        mk_err = float((true - mk_delta[module]).norm() / true.norm())
        assert ext.module_error[module] == pytest.approx(mk_err, rel=1e-4) and 0.05 < mk_err < 1.0
    assert set(mk_full) == set(lb_full) == {"model.embed_tokens.weight", "lm_head.weight"}
    for key, tensor in lb_full.items():
        torch.testing.assert_close(tensor, mk_full[key], rtol=0, atol=0)
        torch.testing.assert_close(tensor, ft_w[key], rtol=0, atol=0)
    mk_cfg = json.loads((mk / "adapter_config.json").read_text())
    lb_cfg = json.loads((info.path / "adapter_config.json").read_text())
    for field in ("r", "lora_alpha", "peft_type", "use_rslora"):
        assert lb_cfg[field] == mk_cfg[field], field
    assert set(lb_cfg["target_modules"]) == set(mk_cfg["target_modules"])
    assert set(lb_cfg["modules_to_save"]) == set(mk_cfg["modules_to_save"])
    out_lb, out_mk = _logits(base, info.path), _logits(base, mk)
    torch.testing.assert_close(out_lb, out_mk, rtol=1e-4, atol=1e-5)
    assert float((out_lb - _logits(base, _mergekit(base, ft, tmp_path / "mk2", 1))).abs().max()) > 1e-3


def test_sv_epsilon_per_module_ranks_match_mergekit(pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, ft = pair
    eps = 0.09  # between the singular values of the 0.02-noise deltas: ranks vary across modules
    mk = _mergekit(base, ft, tmp_path / "mk", 16, "--sv-epsilon", str(eps))
    _, ext = extract_brick(ft, base, 16, tmp_path / "lb", sv_epsilon=eps, modules_to_save=("embed_tokens",))
    mk_cfg = json.loads((mk / "adapter_config.json").read_text())
    mk_rank = {m: mk_cfg["rank_pattern"].get(m, mk_cfg["r"]) for m in ext.module_rank}
    assert ext.module_rank == mk_rank
    assert len(set(mk_rank.values())) > 1  # the cut really gives per-module ranks
    mk_delta, _ = _updates(mk)
    for module, p in ext.pairs.items():
        torch.testing.assert_close(p.delta(), mk_delta[module], rtol=1e-4, atol=1e-6)
