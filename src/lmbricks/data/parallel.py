"""Aligned paragraphs across the languages of a domain with sub-domains (``multilingual``)."""

from __future__ import annotations

from lmbricks.data.corpus import load_records


def paragraphs_by_key(domain: str, split: str = "test") -> dict[str, str]:
    """Paragraphs of a sub-domain keyed by ``page#index`` (paragraphs without a key are left out).

    Args:
        domain: a sub-domain such as ``multilingual/de``.
        split: ``"train"``, ``"validation"`` or ``"test"``.

    Returns:
        Key -> paragraph text.
    """
    out: dict[str, str] = {}
    for record in load_records(domain, split):
        keys = record.get("paragraph_keys") or []
        paras = record["text"].split("\n\n")
        for key, para in zip(keys, paras, strict=False):
            if key is not None:
                out[key] = para
    return out


def parallel_paragraphs(
    source: str, target: str, split: str = "test", domain: str = "multilingual"
) -> list[tuple[str, str]]:
    """Pairs of paragraphs that translate each other, in key order.

    Args:
        source: the first language's sub-domain name (``en``).
        target: the second's (``de``).
        split: the split to read.
        domain: the parent domain.

    Returns:
        ``(source paragraph, target paragraph)`` for every key present in both languages.
    """
    a = paragraphs_by_key(f"{domain}/{source}", split)
    b = paragraphs_by_key(f"{domain}/{target}", split)
    return [(a[k], b[k]) for k in sorted(a.keys() & b.keys())]
