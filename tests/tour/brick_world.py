"""A tiny, offline setting for the bricks and proxy tour sections: user domains and random bricks.

An isolated ``LMBRICKS_HOME`` holds three user domains with disjoint alphabets (so routing has a
real signal), and an isolated shipped-bricks root holds one random LoRA brick per domain recorded
as trained on the tiny model.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

ALPHABETS = {"code": "abcdefgh(){}:=", "zh": "你好世界天地人山水", "math": "0123456789+-=^"}


def _documents(chars: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = lambda k: " ".join("".join(rng.choice(chars) for _ in range(rng.randint(2, 6))) for _ in range(k))  # noqa: E731
    return [words(400) for _ in range(n)]


def make_brick_world(root: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Create the domains and bricks under ``root`` and point lmbricks at them.

    Returns:
        ``{domain: brick directory}``.
    """
    from tests.adapters.conftest import make_brick

    from lmbricks.data import add_domain

    monkeypatch.setenv("LMBRICKS_HOME", str(root / "home"))
    monkeypatch.setenv("LMBRICKS_BRICKS", str(root / "bricks"))
    bricks = {}
    for i, (domain, chars) in enumerate(ALPHABETS.items()):
        files = []
        for j, doc in enumerate(_documents(chars, 24, seed=i)):
            path = root / "text" / domain / f"doc{j:02d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(doc, encoding="utf-8")
            files.append(path)
        add_domain(domain, files, tokenizer=None)
        bricks[domain] = make_brick(tiny_model, root / "bricks" / tiny_model.name / domain, seed=20 + i, domain=domain)
    return bricks
