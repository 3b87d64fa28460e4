"""Cached centroids: computed once, read back bit for bit, keyed by every input; routing then costs one pass."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmbricks.adapters.centroids import (
    CentroidSpec,
    CentroidStats,
    cached_router,
    centroid_key,
    read_centroid,
)
from lmbricks.adapters.route import fit_router, mean_hidden, text_ids
from lmbricks.errors import ConfigError

ALPHABETS = {"d0": "abcdefgh", "d1": "0123456789+-=", "d2": "你好世界天地人"}


def _docs(domain: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    chars = ALPHABETS[domain]
    return [" ".join("".join(rng.choice(chars) for _ in range(rng.randint(2, 6))) for _ in range(30)) for _ in range(n)]


def _keys(spec: CentroidSpec, base: str = "base") -> dict[str, str]:
    return {d: centroid_key(base, f"brick-{d}", d, "data-v1", spec) for d in ALPHABETS}


class _Counter:
    """Counts forward passes of a model (a forward hook)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        model.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1


def test_cached_centroids_equal_fitted_and_skip_the_model(tiny_llama: Path, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    counter = _Counter(model)
    spec = CentroidSpec(max_tokens=256, doc_tokens=64)
    texts = {d: _docs(d, 6, seed=1) for d in ALPHABETS}
    asked: list[str] = []

    def texts_of(name: str) -> Sequence[str]:
        asked.append(name)
        return texts[name]

    first_stats = CentroidStats()
    first = cached_router(model, tok, _keys(spec), texts_of, spec, folder=tmp_path, stats=first_stats)
    direct = fit_router(model, tok, texts, max_tokens=256, doc_tokens=64)
    torch.testing.assert_close(first.centroids, direct.centroids, rtol=0, atol=0)
    assert first_stats.computed == 3 and first_stats.hits == 0 and sorted(asked) == sorted(ALPHABETS)

    # Second time: no text is read and the model is not run; the vectors come back bit for bit.
    asked.clear()
    calls = counter.calls
    second_stats = CentroidStats()
    second = cached_router(model, tok, _keys(spec), texts_of, spec, folder=tmp_path, stats=second_stats)
    assert counter.calls == calls and not asked and second_stats.hits == 3
    torch.testing.assert_close(second.centroids, first.centroids, rtol=0, atol=0)
    assert second.names == first.names

    # Routing a prompt is then exactly one forward pass, and it routes to its planted domain.
    for domain in ALPHABETS:
        calls = counter.calls
        h = mean_hidden(model, text_ids(tok, _docs(domain, 1, seed=7)[0], 64))
        assert second.route(h)[0][0][0] == domain
        assert counter.calls == calls + 1


def test_key_changes_with_every_input_and_bad_entries_are_recomputed(tiny_llama: Path, tmp_path: Path) -> None:
    spec = CentroidSpec(max_tokens=128, doc_tokens=64)
    key = centroid_key("base", "brick", "d0", "data-v1", spec)
    others = {
        centroid_key("base2", "brick", "d0", "data-v1", spec),
        centroid_key("base", "brick2", "d0", "data-v1", spec),
        centroid_key("base", "brick", "d1", "data-v1", spec),
        centroid_key("base", "brick", "d0", "data-v2", spec),
        centroid_key("base", "brick", "d0", "data-v1", CentroidSpec(layer=-2, max_tokens=128, doc_tokens=64)),
        centroid_key("base", "brick", "d0", "data-v1", CentroidSpec(max_tokens=256, doc_tokens=64)),
    }
    assert key not in others and len(others) == 6

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    texts = {"d0": _docs("d0", 3, seed=1)}
    cached_router(model, tok, {"d0": key}, texts.__getitem__, spec, folder=tmp_path)
    good = read_centroid(tmp_path, key, model.config.hidden_size)
    assert good is not None
    assert read_centroid(tmp_path, key, model.config.hidden_size + 1) is None  # another model's width
    (tmp_path / f"{key}.json").write_text("{not json")
    assert read_centroid(tmp_path, key) is None
    stats = CentroidStats()
    again = cached_router(model, tok, {"d0": key}, texts.__getitem__, spec, folder=tmp_path, stats=stats)
    assert stats.computed == 1
    torch.testing.assert_close(again.centroids[0], good, rtol=0, atol=0)


def test_refresh_recomputes(tiny_llama: Path, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    spec = CentroidSpec(max_tokens=128, doc_tokens=64)
    texts = {"d1": _docs("d1", 3, seed=1)}
    key = {"d1": centroid_key("b", "k", "d1", "x", spec)}
    cached_router(model, tok, key, texts.__getitem__, spec, folder=tmp_path)
    stats = CentroidStats()
    cached_router(model, tok, key, texts.__getitem__, spec, folder=tmp_path, stats=stats, refresh=True)
    assert (stats.hits, stats.computed) == (0, 1)
    with pytest.raises(ConfigError, match="no bricks"):
        cached_router(model, tok, {}, texts.__getitem__, spec, folder=tmp_path)
