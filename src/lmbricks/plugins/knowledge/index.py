"""The routing index of a knowledge plug-in directory: Okapi BM25 over the training documents.

BM25 costs no forward pass of the model (a question is routed in microseconds, so the plug-in's
compute per question is the question's own tokens), and it keys on the rare words of a factual
question (a command name, a package, a number), which is what tells two sections of one handbook
apart; mean hidden states of a 135M base mostly encode the genre, which all the sections share.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lmbricks.errors import CheckpointError

INDEX_FILE = "index.json"
_WORD = re.compile(r"\w+", re.UNICODE)


def terms(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (``\\w+``; numbers are words)."""
    return [w.lower() for w in _WORD.findall(text)]


@dataclass(frozen=True)
class BM25Index:
    """Term counts per document and the BM25 parameters.

    Attributes:
        counts: ``{document name: {term: count}}``.
        k1: term-frequency saturation.
        b: length normalisation.
    """

    counts: Mapping[str, Mapping[str, int]]
    k1: float = 1.5
    b: float = 0.75

    @classmethod
    def build(cls, documents: Mapping[str, str]) -> BM25Index:
        """Index ``{name: text}``."""
        return cls({name: dict(Counter(terms(text))) for name, text in documents.items()})

    def scores(self, query: str) -> dict[str, float]:
        """BM25 score of each document for ``query`` (higher is more relevant), in index order."""
        n = len(self.counts)
        lengths = {name: sum(c.values()) for name, c in self.counts.items()}
        mean = sum(lengths.values()) / max(1, n)
        out = dict.fromkeys(self.counts, 0.0)
        for term in set(terms(query)):
            df = sum(1 for c in self.counts.values() if term in c)
            if df == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for name, c in self.counts.items():
                tf = c.get(term, 0)
                if tf:
                    norm = 1 - self.b + self.b * lengths[name] / max(mean, 1e-9)
                    out[name] += idf * tf * (self.k1 + 1) / (tf + self.k1 * norm)
        return out

    def route(self, query: str, top_k: int = 1) -> list[str]:
        """The ``top_k`` best-scoring document names (ties: index order); empty if no term matches."""
        scores = self.scores(query)
        ranked = sorted((s, -i, name) for i, (name, s) in enumerate(scores.items()) if s > 0)
        return [name for _, _, name in reversed(ranked[-top_k:])] if top_k > 0 else []

    def save(self, directory: Path) -> None:
        """Write ``index.json`` into ``directory``."""
        data = {"kind": "bm25", "k1": self.k1, "b": self.b, "counts": self.counts}
        with open(directory / INDEX_FILE, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.write("\n")

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        """Read ``index.json`` from a plug-in directory.

        Raises:
            CheckpointError: the file is missing or is not a BM25 index.
        """
        path = directory / INDEX_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing (not a knowledge plug-in directory)") from None
        except ValueError as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("kind") != "bm25" or not isinstance(data.get("counts"), dict):
            raise CheckpointError(f"{path}: not a BM25 index")
        return cls(data["counts"], float(data["k1"]), float(data["b"]))
