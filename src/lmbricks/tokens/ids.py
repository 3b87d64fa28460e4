"""The special token ids of a transplanted model: the model's own tokens, found in the donor's vocabulary.

The model was trained to start with its BOS token and to stop with its EOS token, so the output's
``bos_token_id`` / ``eos_token_id`` / ``pad_token_id`` are the donor ids of the **model's** tokens
(matched by :mod:`lmbricks.tokens.spelling` keys). An EOS the donor lacks is an error (the
transplanted model could never stop, and its chat turns could never end); a BOS or pad the donor
lacks falls back to the donor's own BOS / pad token, or is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmbricks.errors import ConfigError
from lmbricks.tokens.spelling import Key
from lmbricks.tokens.vocab import TokenizerSide

ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _donor_ids(donor: TokenizerSide) -> dict[Key, int]:
    first: dict[Key, int] = {}
    for i in sorted(donor.keys):
        first.setdefault(donor.keys[i], i)
    return first


def _one(value: Any, field: str, model: TokenizerSide, donor: TokenizerSide, lookup: dict[Key, int]) -> int | None:
    """The donor id of the model's token ``value`` for ``field`` (None: the donor lacks it)."""
    token_id = int(value)
    key = model.keys.get(token_id)
    if key is None:
        raise ConfigError(f"config.json {field} is {token_id}, an id the model's tokenizer has no token for")
    found = lookup.get(key)
    if found is None and field == "eos_token_id":
        token = model.tokens[token_id]
        raise ConfigError(
            f"the donor tokenizer ({donor.directory}) has no token {token!r}, the model's end-of-sequence token "
            f"(eos_token_id {token_id}, which ends its chat turns): the transplanted model could never stop; "
            "add the token to the donor tokenizer or choose another donor"
        )
    return found


def remap_ids(settings: Mapping[str, Any], model: TokenizerSide, donor: TokenizerSide) -> dict[str, Any]:
    """``bos_token_id`` / ``eos_token_id`` / ``pad_token_id`` of a config (or generation config), remapped.

    Args:
        settings: the model's ``config.json`` or ``generation_config.json`` as a dict.
        model: the model's tokenizer; donor: the donor's.

    Returns:
        A copy of ``settings`` with the three ids in the donor's numbering (a list stays a list, in
        order; a field the donor cannot fill is removed).

    Raises:
        ConfigError: the donor lacks one of the model's EOS tokens, or an id has no token.
    """
    out = dict(settings)
    lookup = _donor_ids(donor)
    fallback = {"bos_token_id": donor.special.get("bos"), "pad_token_id": donor.special.get("pad")}
    for field in ID_FIELDS:
        value = settings.get(field)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        mapped = [_one(v, field, model, donor, lookup) for v in values]
        kept = [v for v in mapped if v is not None]
        if not kept and fallback.get(field) is not None:
            own = donor.id_of(str(fallback[field]))
            kept = [own] if own is not None else []
        if not kept:
            out.pop(field, None)
        else:
            out[field] = kept if isinstance(value, list) else kept[0]
    return out


def check_template(template: str, model: TokenizerSide, donor: TokenizerSide) -> None:
    """Refuse a chat template (the model's, kept because the donor has none) naming a special token the donor lacks.

    Raises:
        ConfigError: naming the token.
    """
    lookup = _donor_ids(donor)
    for i, key in model.keys.items():
        if key[0] and model.tokens[i] in template and key not in lookup:
            raise ConfigError(
                f"the model's chat template uses {model.tokens[i]!r}, which the donor tokenizer "
                f"({donor.directory}) lacks, and the donor has no chat template of its own"
            )
