"""A model's identity: a hash of what determines its function, never of a library's bookkeeping.

Three parts, each a SHA-256:

- **weights**: every tensor's name, dtype, shape and bytes, in name order. It does not depend on how
  the tensors are split into shards, on their order in the file, or on the safetensors header's
  metadata.
- **config**: the architecture fields of ``config.json`` as canonical JSON. Fields that tools write
  about themselves (``transformers_version``, ``_name_or_path`` and every other ``_``-prefixed key,
  the ``dtype``/``torch_dtype`` spelling, which the weights already carry) and run-time switches
  (``use_cache``, ``output_*``, ``return_dict``) are left out.
- **tokenizer**: the vocabulary, merges, added and special tokens, and the chat template, read
  from ``tokenizer.json``/``tokenizer_config.json``/``chat_template.jinja`` (or ``vocab.json`` +
  ``merges.txt``, or ``tokenizer.model``) and normalised (merges as pairs, special tokens as text,
  the template from whichever file holds it).

So two conversions of the same weights by different library versions hash the same, and a changed
weight, vocabulary or architecture field does not. :meth:`ModelIdentity.differences` names what
differs between two identities. A single file (a GGUF, a pickle) is identified by its bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmbricks.errors import CheckpointError

#: config.json fields that describe the tool or the run, not the network.
IGNORED_CONFIG_FIELDS = frozenset(
    {
        "transformers_version",
        "dtype",
        "torch_dtype",
        "use_cache",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "torchscript",
        "initializer_range",  # how weights were initialised for training; the weights themselves are hashed
    }
)
_SPECIAL_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "sep_token",
    "cls_token",
    "mask_token",
    "additional_special_tokens",
)
_BUF = 8 << 20


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


# ----------------------------------------------------------------------------------------- config
#: RoPE types whose parameters include the pre-training context length (transformers' rule).
_ROPE_TYPES_WITH_ORIGINAL_LENGTH = ("llama3", "yarn", "longrope")


def _canonical_rope_dict(params: Mapping[str, Any], theta: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(params)
    out.setdefault("rope_type", out.pop("type", "default"))
    out.pop("type", None)
    if theta is not None:
        out.setdefault("rope_theta", theta)
    if out["rope_type"] in _ROPE_TYPES_WITH_ORIGINAL_LENGTH:
        if "original_max_position_embeddings" in config:
            out["original_max_position_embeddings"] = config["original_max_position_embeddings"]
        elif "max_position_embeddings" in config:
            out.setdefault("original_max_position_embeddings", config["max_position_embeddings"])
    return out


def canonical_rope(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with its rotary-embedding fields in one spelling: transformers 5's ``rope_parameters``.

    transformers 4 writes ``rope_theta`` and ``rope_scaling`` (``null``, or a dict keyed ``type`` or
    ``rope_type``) at the top level; transformers 5 writes one ``rope_parameters`` dict holding
    ``rope_type`` and ``rope_theta`` (one dict per layer type where layers differ). The same network
    saved by either gets the same fields here, so its identity does not depend on the library
    version; a different theta, scaling type or factor still differs.

    Args:
        config: a ``config.json`` mapping (not modified).

    Returns:
        A copy with ``rope_theta``/``rope_scaling`` folded into ``rope_parameters``; unchanged when the
        config has none of the three.
    """
    if not any(key in config for key in ("rope_theta", "rope_scaling", "rope_parameters")):
        return dict(config)
    out = dict(config)
    theta = out.pop("rope_theta", None)
    scaling = out.pop("rope_scaling", None)
    params = scaling or out.get("rope_parameters")
    if params is None and theta is None:
        out["rope_parameters"] = None
        return out
    params = params or {}
    nested = bool(params) and all(isinstance(v, Mapping) or v is None for v in params.values())
    if nested:  # one dict per layer type (e.g. Gemma 3's sliding and full attention)
        out["rope_parameters"] = {
            layer: None if p is None else _canonical_rope_dict(p, theta, config) for layer, p in params.items()
        }
    else:
        out["rope_parameters"] = _canonical_rope_dict(params, theta, config)
    return out


def architecture_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` without tool-written and run-time fields (recursively, for nested sub-configs).

    Rotary-embedding fields are first put in one spelling (:func:`canonical_rope`), so a config saved
    by transformers 4 and the same one saved by transformers 5 give the same fields.
    """
    return _without_bookkeeping(canonical_rope(config))


def _without_bookkeeping(config: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith("_") or key in IGNORED_CONFIG_FIELDS:
            continue
        # A sub-config (text_config, ...) is canonicalised too; RoPE's own dict is not a config.
        if isinstance(value, Mapping):
            value = _without_bookkeeping(value) if key == "rope_parameters" else architecture_fields(value)
        out[key] = value
    return out


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the architecture fields whose values differ (or exist in one only)."""
    return _field_differences(architecture_fields(a), architecture_fields(b), prefix)


def _field_differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str) -> list[str]:
    names = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            names += _field_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            names.append(f"{prefix}{key}")
    return names


_MISSING = object()


# -------------------------------------------------------------------------------------- tokenizer
def _token_text(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get("content")
    if isinstance(value, list):
        return [_token_text(v) for v in value]
    return value


def _merges(raw: Any) -> list[list[str]]:
    pairs = []
    for merge in raw or []:
        pairs.append(merge.split(" ", 1) if isinstance(merge, str) else [str(m) for m in merge])
    return pairs


def tokenizer_content(directory: Path) -> dict[str, Any]:
    """The normalised tokenizer content of a model directory (empty when it has no tokenizer files).

    Keys: ``model`` (type, vocabulary as (token, id) pairs in id order, merges as pairs, unk token),
    ``added_tokens`` ((id, text, special) triples), ``special`` (bos/eos/unk/pad/... as text),
    ``chat_template``; or ``sentencepiece`` (the SHA-256 of ``tokenizer.model``) for tokenizers
    with no ``tokenizer.json``.
    """
    content: dict[str, Any] = {}
    tok_json, tok_config = directory / "tokenizer.json", directory / "tokenizer_config.json"
    if tok_json.is_file():
        data = _read_json(tok_json)
        model = data.get("model") or {}
        vocab = model.get("vocab") or {}
        if isinstance(vocab, Mapping):  # BPE / WordPiece: token -> id
            vocab_items: list[Any] = sorted(([t, int(i)] for t, i in vocab.items()), key=lambda x: x[1])
        else:  # Unigram: [[token, score], ...] in id order
            vocab_items = [list(v) for v in vocab]
        content["model"] = {
            "type": model.get("type"),
            "vocab": vocab_items,
            "merges": _merges(model.get("merges")),
            "unk_token": model.get("unk_token"),
        }
        content["added_tokens"] = sorted(
            [int(t["id"]), t.get("content"), bool(t.get("special", False))] for t in data.get("added_tokens") or []
        )
    elif (directory / "vocab.json").is_file():
        vocab = _read_json(directory / "vocab.json")
        merges_file = directory / "merges.txt"
        merges = []
        if merges_file.is_file():
            lines = merges_file.read_text(encoding="utf-8").splitlines()
            merges = [ln for ln in lines if ln and not ln.startswith("#version")]
        content["model"] = {
            "type": "BPE",
            "vocab": sorted(([t, int(i)] for t, i in vocab.items()), key=lambda x: x[1]),
            "merges": _merges(merges),
            "unk_token": None,
        }
    if (directory / "tokenizer.model").is_file():
        content["sentencepiece"] = file_sha256(directory / "tokenizer.model")
    template = None
    if tok_config.is_file():
        cfg = _read_json(tok_config)
        special = {k: _token_text(cfg[k]) for k in _SPECIAL_TOKEN_KEYS if cfg.get(k) not in (None, [])}
        if special:
            content["special"] = special
        template = cfg.get("chat_template")
    if (directory / "chat_template.jinja").is_file():
        template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    if template:
        content["chat_template"] = template
    return content


# ---------------------------------------------------------------------------------------- weights
def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    buf = bytearray(_BUF)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def safetensors_tensor_hashes(path: Path) -> dict[str, list[Any]]:
    """``name -> [dtype, shape, sha256 of the tensor's bytes]`` for every tensor of a safetensors file.

    Raises:
        CheckpointError: the file is truncated or its header is not valid safetensors.
    """
    size = path.stat().st_size
    out: dict[str, list[Any]] = {}
    with open(path, "rb", buffering=0) as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{path}: truncated (header of {n} bytes in a {size}-byte file)")
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            raise CheckpointError(f"{path}: safetensors header is not valid JSON ({exc})") from None
        base = 8 + n
        entries = sorted(
            ((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]
        )
        buf = bytearray(_BUF)
        for name, info in entries:
            start, end = (int(x) for x in info["data_offsets"])
            if base + end > size:
                raise CheckpointError(f"{path}: truncated (tensor {name} ends past the end of the file)")
            fh.seek(base + start)
            digest = hashlib.sha256()
            left = end - start
            while left:
                view = memoryview(buf)[: min(left, _BUF)]
                got = fh.readinto(view)
                if not got:
                    raise CheckpointError(f"{path}: truncated while reading tensor {name}")
                digest.update(view[:got])
                left -= got
            out[name] = [str(info["dtype"]), list(info["shape"]), digest.hexdigest()]
    return out


FileHasher = Callable[[Path, str, Callable[[Path], Any]], Any]


def _plain_file_hasher(path: Path, _kind: str, compute: Callable[[Path], Any]) -> Any:
    return compute(path)


def weights_digest(files: list[Path], cached: FileHasher = _plain_file_hasher) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) of the weight files, in name order.

    Safetensors files are hashed tensor by tensor (shard layout does not matter); other weight files
    (pickles, ``.pt``) by their bytes, named by file.
    """
    tensors: dict[str, Any] = {}
    for file in files:
        if file.name.endswith(".safetensors"):
            for name, entry in cached(file, "tensors", safetensors_tensor_hashes).items():
                if name in tensors:
                    raise CheckpointError(f"{file}: tensor {name} also stands in another shard")
                tensors[name] = entry
        else:
            tensors[f"file:{file.name}"] = cached(file, "sha256", file_sha256)
    return _digest(sorted(tensors.items()))


# --------------------------------------------------------------------------------------- identity
@dataclass(frozen=True)
class ModelIdentity:
    """What a model is: hashes of its weights, architecture fields and tokenizer.

    ``config_fields`` keeps the architecture fields themselves so a mismatch can name the field.
    """

    weights: str
    config: str
    tokenizer: str
    config_fields: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def sha256(self) -> str:
        """The model's identity as one hash (what records and bricks call ``sha256``)."""
        text = f"weights:{self.weights}\nconfig:{self.config}\ntokenizer:{self.tokenizer}\n"
        return hashlib.sha256(text.encode()).hexdigest()

    def to_record(self) -> dict[str, Any]:
        """JSON-friendly form for ``lmbricks.json``."""
        return {"sha256": self.sha256, **asdict(self)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ModelIdentity:
        """Inverse of :meth:`to_record`."""
        return cls(
            weights=str(record["weights"]),
            config=str(record["config"]),
            tokenizer=str(record["tokenizer"]),
            config_fields=dict(record.get("config_fields") or {}),
        )

    def differences(self, other: ModelIdentity) -> list[str]:
        """What differs, in words: ``weights``, ``config field X`` (each), ``tokenizer``."""
        out = []
        if self.weights != other.weights:
            out.append("weights")
        if self.config != other.config:
            fields = config_differences(self.config_fields, other.config_fields)
            out += [f"config field {f}" for f in fields] or ["config"]
        if self.tokenizer != other.tokenizer:
            out.append("tokenizer")
        return out


def model_identity(directory: Path, weight_files: list[Path], cached: FileHasher = _plain_file_hasher) -> ModelIdentity:
    """The :class:`ModelIdentity` of a Hugging Face model directory.

    Args:
        directory: the model directory (``config.json``, weights, tokenizer files).
        weight_files: its weight files (safetensors shards, or pickles).
        cached: ``(file, kind, compute) -> value``, a per-file cache (see ``provenance._HashCache``).
    """
    config_path = directory / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    fields = architecture_fields(config)
    return ModelIdentity(
        weights=weights_digest(weight_files, cached),
        config=_digest(fields),
        tokenizer=_digest(tokenizer_content(directory)),
        config_fields=fields,
    )
