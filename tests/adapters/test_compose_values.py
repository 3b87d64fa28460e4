"""LoRA composition and extraction maths on hand-computed cases (issue #22; tests/MUTATIONS.md).

Each test names, in its docstring, the planted bugs of ``scripts/mutants.json`` (area ``adapters``)
it catches; tests/MUTATIONS.md lists which of them main's tests let through. Factors are built by
hand (no files), but for the extraction check on the tiny Llama.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmbricks.adapters.brick import LoraPair
from lmbricks.adapters.compose import compose, svd_compress
from lmbricks.adapters.extract import extract_pairs, factor_delta
from lmbricks.checkpoint import CheckpointReader, save_state_dict

M = "layers.0.q_proj"


def _brick(b: list[list[float]], scale: float = 1.0) -> dict[str, LoraPair]:
    """One module whose update is ``scale * B`` (A is the identity of B's width)."""
    bt = torch.tensor(b)
    return {M: LoraPair(A=torch.eye(bt.shape[1]), B=bt, scale=scale)}


def test_cat_weights_each_brick_by_its_weight_and_scale() -> None:
    """``cat`` of updates 0.5 * B1 and 3 * B2 with weights (2, -1): 2 * 0.5 * B1 - 3 * B2, by hand.
    Catches ``cat: LoRA scale dropped``."""
    out = compose("cat", [_brick([[1.0, 2.0], [3.0, 4.0]], 0.5), _brick([[0.0, 1.0], [1.0, 0.0]], 3.0)], [2.0, -1.0])
    assert torch.allclose(out.pairs[M].delta(), torch.tensor([[1.0, -1.0], [0.0, 4.0]]))


def test_svd_keeps_the_largest_singular_values() -> None:
    """The best rank-2 approximation of diag(3, 1, 2) is diag(3, 0, 2) (Eckart-Young), with the
    singular values in the factors. Catches ``svd: singular values dropped`` and ``svd: smallest
    singular directions kept``."""
    pair = svd_compress(torch.diag(torch.tensor([3.0, 1.0, 2.0])), 2)
    assert torch.allclose(pair.delta(), torch.diag(torch.tensor([3.0, 0.0, 2.0])), atol=1e-6)


def test_svd_compose_reports_the_relative_frobenius_error() -> None:
    """diag(4, 3) at rank 1 keeps diag(4, 0): the error is ||diag(0, 3)|| / ||diag(4, 3)|| = 3 / 5.
    Catches ``compose: relative error without the square root``."""
    out = compose("svd", [_brick([[4.0, 0.0], [0.0, 3.0]])], [1.0], rank=1)
    assert abs(out.rel_error - 0.6) < 1e-6
    assert torch.allclose(out.pairs[M].delta(), torch.tensor([[4.0, 0.0], [0.0, 0.0]]), atol=1e-6)


def test_linear_and_lorahub_of_one_brick_by_hand() -> None:
    """One brick has no cross terms: ``linear`` with weight -0.5 on an update 2 * B gives -0.5 * 2 * B
    (the sign on A); ``lorahub`` with weight 0.5 and scale 3 gives (0.5 * 3 B)(0.5 A) = 0.75 B.
    Catches ``linear: sign of the weight dropped`` and ``lorahub: scale dropped``."""
    b = [[1.0, 2.0], [0.0, -1.0]]
    linear = compose("linear", [_brick(b, 2.0)], [-0.5])
    assert torch.allclose(linear.pairs[M].delta(), -torch.tensor(b))
    hub = compose("lorahub", [_brick(b, 3.0)], [0.5])
    assert torch.allclose(hub.pairs[M].delta(), 0.75 * torch.tensor(b))


def test_ties_compose_trims_to_the_density() -> None:
    """TIES of one update at density 0.25 keeps its largest entry of four (4), the rest 0; at full
    rank the SVD returns that exactly. Catches ``ties compose: density ignored``."""
    out = compose("ties", [_brick([[4.0, -1.0], [0.5, 2.0]])], [1.0], density=0.25, rank=2)
    assert torch.allclose(out.pairs[M].delta(), torch.tensor([[4.0, 0.0], [0.0, 0.0]]), atol=1e-6)


def test_dare_compose_rescales_the_kept_entries_by_the_inverse_density() -> None:
    """DARE at density 0.5 in ``inverse`` mode: each entry of the update is dropped (0) or kept at
    twice its value; some of both. Catches ``dare compose: no rescale``."""
    b = (torch.arange(1.0, 37.0).reshape(6, 6) * torch.tensor([1.0, -1.0]).repeat(3)).tolist()
    out = compose("dare", [_brick(b)], [1.0], density=0.5, rank=6, seed=3)
    got, want = out.pairs[M].delta(), torch.tensor(b)
    kept = got.abs() > 1e-3
    assert 0 < int(kept.sum()) < 36
    assert torch.allclose(got[kept], 2 * want[kept], rtol=1e-4)
    assert torch.allclose(got[~kept], torch.zeros(int((~kept).sum())), atol=1e-3)


def test_factor_delta_drops_singular_values_at_or_below_epsilon() -> None:
    """diag(3, 2, 0.5) with ``sv_epsilon=1``: two singular values kept, the third direction zero-padded.
    Catches ``extract: sv_epsilon reads A's row norms``."""
    pair, kept = factor_delta(torch.diag(torch.tensor([3.0, 2.0, 0.5])), 3, sv_epsilon=1.0)
    assert kept == 2 and pair.rank == 3
    assert torch.allclose(pair.delta(), torch.diag(torch.tensor([3.0, 2.0, 0.0])), atol=1e-6)


def test_extraction_errors_are_the_discarded_singular_values_share(tiny_llama: Path, tmp_path: Path) -> None:
    """A rank-6 change of q_proj extracted at rank 2: by Eckart-Young, the module's relative error is
    ``sqrt(sum_{i>2} s_i^2 / sum_i s_i^2)`` of the change's singular values, and the overall error
    equals it when q_proj is the only changed module; the factors reproduce ``finetuned - base``
    (sign included) in the top two directions. Catches ``extract: module error squared``."""
    reader = CheckpointReader(tiny_llama)
    gen = torch.Generator().manual_seed(5)
    key = "model.layers.0.self_attn.q_proj.weight"
    tensors = {k: reader.get(k).float().clone() for k in reader}
    w = tensors[key]
    change = torch.randn(w.shape[0], 6, generator=gen) @ torch.randn(6, w.shape[1], generator=gen) * 0.05
    tensors[key] = w + change
    config = json.loads((tiny_llama / "config.json").read_text())
    save_state_dict(tmp_path / "ft", tensors, config=config)
    ext = extract_pairs(reader, CheckpointReader(tmp_path / "ft"), 2)
    s = torch.linalg.svdvals(change.double())
    want = float((s[2:].square().sum() / s.square().sum()).sqrt())
    module = key.removesuffix(".weight")
    assert abs(ext.module_error[module] - want) < 1e-5
    assert abs(ext.rel_error - want) < 1e-5
    u, sv, vh = torch.linalg.svd(change.double())
    best = (u[:, :2] * sv[:2]) @ vh[:2]
    torch.testing.assert_close(ext.pairs[module].delta().double(), best, rtol=1e-4, atol=1e-5)
