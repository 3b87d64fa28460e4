"""Tokenizer transplant: give a model another tokenizer (``lmbricks tokens transplant``).

- :func:`transplant` (:mod:`lmbricks.tokens.pipeline`): a :class:`TransplantConfig` in, a
  :class:`TransplantResult` out, a Hugging Face directory written.
- :mod:`lmbricks.tokens.spelling`: token strings as bytes across byte-level and SentencePiece vocabularies.
- :mod:`lmbricks.tokens.omp`: orthogonal matching pursuit and the mean / zero baselines.
- :mod:`lmbricks.tokens.rows`: the output matrix from the model's rows and an index map.
- :mod:`lmbricks.tokens.ids`: the special token ids remapped into the donor's numbering.
"""

from __future__ import annotations

from lmbricks.tokens.omp import omp
from lmbricks.tokens.pipeline import METHODS, TransplantConfig, TransplantResult, transplant

__all__ = ["METHODS", "TransplantConfig", "TransplantResult", "omp", "transplant"]
