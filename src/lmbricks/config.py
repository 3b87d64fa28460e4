"""The one way to load a YAML config, validate it with pydantic, and report what is wrong.

Every user-written config (training YAML, merge and assembly recipes, MoEfication and LoRA
settings, reward-model settings) goes through :func:`validate` (or :func:`load` for a file). Their
pydantic models forbid unknown keys, and a validation failure becomes one :class:`ConfigError`
naming the file, the key path and the value at fault, with the nearest valid key for a typo::

    train.yaml: unknown key 'stepz' (did you mean 'steps'?)
    train.yaml: optim.lr: Input should be greater than 0 (got -0.1)
    recipe.yaml: models[0].parameters.weight: must be a number, string, boolean, list or filter entries (got None)

Example:
    >>> from lmbricks.config import load  # doctest: +SKIP
    >>> cfg = load(TrainConfig, "train.yaml", what="training config")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import pydantic.dataclasses
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic.dataclasses import is_pydantic_dataclass
from pydantic.fields import FieldInfo
from typing_extensions import dataclass_transform

from lmbricks.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    #: What :func:`format_errors` reads the valid keys from: a pydantic model or a pydantic dataclass.
    Schema = type[BaseModel] | type[DataclassInstance]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

#: Errors listed in one message at most (the first ones, unknown keys first).
MAX_ERRORS = 3


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file.

    Raises:
        ConfigError: the file cannot be read or is not valid YAML (with the line where it breaks).
    """
    return _parse_yaml(path, yaml.safe_load)


def load_yaml_documents(path: str | Path) -> list[Any]:
    """Parse a YAML file of several documents separated by ``---`` (empty documents are None).

    Raises:
        ConfigError: as :func:`load_yaml`.
    """
    return _parse_yaml(path, lambda text: list(yaml.safe_load_all(text)))


def _parse_yaml(path: str | Path, parse: Callable[[str], Any]) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read ({reason})") from None
    try:
        return parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None


def validate(model: type[M], data: Any, source: str, *, what: str = "config", finite: bool = True) -> M:
    """Validate ``data`` (parsed YAML or keyword arguments) into ``model``.

    Args:
        model: the pydantic model (it should forbid unknown keys: ``extra="forbid"``).
        data: a mapping.
        source: where the data came from, first in every message (a file name, ``moefy options``).
        what: what the data is, for the "must be a mapping" message (``recipe``, ``training config``).
        finite: refuse NaN and infinite numbers anywhere in ``data`` (YAML's ``.nan``, ``.inf``),
            which pass range checks such as ``ge=0`` and would silently poison a run.

    Raises:
        ConfigError: one line naming the source, key path and value (see the module docstring).
    """
    if not isinstance(data, Mapping):
        got = "nothing (an empty file?)" if data is None else type(data).__name__
        raise ConfigError(f"{source}: a {what} must be a YAML mapping of keys to values, got {got}")
    if finite:
        try:
            require_finite(data, "")
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + format_errors(exc, model, data)) from None


def load(model: type[M], path: str | Path, *, what: str = "config") -> M:
    """:func:`load_yaml` then :func:`validate` (messages start with the file's path)."""
    return validate(model, load_yaml(path), str(path), what=what)


@dataclass_transform(frozen_default=True)
def settings(cls: type[T]) -> type[T]:
    """Class decorator: a frozen pydantic dataclass whose construction fails as one :class:`ConfigError`.

    For settings built in Python by keyword or position (``SparsityConfig(("code", "zh"), n_chunks=2)``):
    unknown keys are refused with a "did you mean", range checks are declared on the fields
    (``n_chunks: Annotated[int, Field(ge=1)] = 4``), and a failure reads as every config's does:
    ``n_chunks: Input should be greater than or equal to 1 (got 0)``. ``dataclasses.asdict`` works.

    Args:
        cls: the class body (annotated fields with defaults; ``__post_init__`` for cross-field checks).

    Returns:
        The pydantic dataclass.
    """
    built = pydantic.dataclasses.dataclass(config=ConfigDict(extra="forbid", frozen=True))(cls)
    init = built.__init__
    names = [f.name for f in dataclasses.fields(built)]

    @functools.wraps(init)
    def checked_init(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise ConfigError(f"{cls.__name__} takes {len(names)} fields, got {len(args)} positional values")
        data = dict(zip(names, args, strict=False)) | kwargs  # positions named, so errors name the key
        try:
            init(self, **data)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, built, data)) from None

    built.__init__ = checked_init  # type: ignore[method-assign]
    return cast("type[T]", built)


def key_path(parts: Sequence[str | int]) -> str:
    """``("models", 0, "parameters", "weight")`` -> ``models[0].parameters.weight``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def suggest(name: str, candidates: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for the candidate nearest to ``name``, or an empty string."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def one_of(choices: Collection[str], what: str) -> AfterValidator:
    """A field validator: the value must be one of ``choices`` (a registry's names).

    ``choices`` is read when a value is validated, not when the model is defined, so a name
    registered later (``register_router``) is accepted. Use as
    ``router: Annotated[str, one_of(ROUTERS, "router")] = "softmax_topk"``.

    Args:
        choices: the valid names (a registry mapping, a tuple of names).
        what: what a name names, for the message: ``unknown router 'x' (did you mean 'y'?) (choose from ...)``.

    Returns:
        A pydantic ``AfterValidator`` for ``Annotated``.
    """

    def check(name: str) -> str:
        if name not in choices:
            raise ValueError(f"unknown {what} {name!r}{suggest(name, choices)} (choose from {', '.join(choices)})")
        return name

    return AfterValidator(check)


class Named(Protocol):
    """An entry of a :class:`NameTable`: anything with a ``name``."""

    @property
    def name(self) -> str: ...


E = TypeVar("E", bound=Named)


class NameTable(dict[str, E]):
    """A registry's entries by their ``name`` (a dict), whose :meth:`lookup` names the known ones.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Spec:
        ...     name: str
        >>> table = NameTable("model name", [Spec("smollm2"), Spec("gemma")])
        >>> table.lookup("gemma")
        Spec(name='gemma')
    """

    def __init__(self, what: str, entries: Iterable[E], known: str = "known names") -> None:
        """Args: what a name names (``model name``, ``domain``); the entries; the label of the known list."""
        super().__init__((e.name, e) for e in entries)
        self.what = what
        self.known = known

    def lookup(self, name: str) -> E:
        """The entry called ``name``.

        Raises:
            UnknownNameError: ``unknown domain 'cod' (did you mean 'code'?); built-in domains: ...``.
        """
        entry = self.get(name)
        if entry is None:
            hint = suggest(name, self)
            raise UnknownNameError(f"unknown {self.what} {name!r}{hint}; {self.known}: {', '.join(self)}")
        return entry


def show_value(value: Any) -> str:
    """A short ``repr`` of a value for messages (long ones are cut)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: ".inf", -math.inf: "-.inf"}.get(value, ".nan")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def require_finite(value: Any, where: str) -> None:
    """Refuse NaN and infinite numbers anywhere in ``value`` (nested lists and mappings too).

    Raises:
        ConfigError: ``{where}: must be a finite number, got .inf`` naming the key path.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {show_value(value)}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            require_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            require_finite(v, f"{where}[{i}]")


# -- turning pydantic's errors into one line --------------------------------------------------------


def _walk(data: Any, loc: Sequence[Any], missing_last: bool) -> tuple[list[str | int], int | None, Any]:
    """Follow ``loc`` through the input: ``(key path, length of the path where a union branch was
    first entered or None, value at the path)``.

    pydantic puts the names of union branches (``Conditional``, ``list[...]``, ``bool``) into error
    locations; they are the parts that are not keys of the input, and they are left out.
    """
    parts: list[str | int] = []
    node: Any = data
    branch: int | None = None
    for i, p in enumerate(loc):
        last = i == len(loc) - 1
        is_key = isinstance(node, Mapping) and p in node
        if is_key or (isinstance(p, int) and isinstance(node, (list, tuple)) and 0 <= p < len(node)):
            parts.append(p)
            node = node[p]
        elif last and missing_last and isinstance(p, str):
            parts.append(p)
            node = None
        elif branch is None:
            branch = len(parts)
    return parts, branch, node


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types inside ``Optional``/``Union``/``Annotated``."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [t for arg in typing.get_args(tp) for t in _unwrap(arg)]
    return [tp]


def _model_fields(tp: Any) -> dict[str, FieldInfo] | None:
    """The fields of a pydantic model or pydantic dataclass, or None for any other type."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.model_fields
    if isinstance(tp, type) and is_pydantic_dataclass(tp):
        return tp.__pydantic_fields__
    return None


def _children(tp: Any, part: str | int) -> list[Any]:
    out: list[Any] = []
    for t in _unwrap(tp):
        origin = typing.get_origin(t)
        args = typing.get_args(t)
        fields = _model_fields(t)
        if fields is not None and isinstance(part, str):
            field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
            if field is not None:
                out.append(field.annotation)
        elif origin in (list, tuple, set, frozenset) or (
            isinstance(origin, type) and issubclass(origin, Sequence) and origin is not str
        ):
            if isinstance(part, int):
                out.extend(a for a in args if a is not Ellipsis)
        elif (origin is dict or (isinstance(origin, type) and issubclass(origin, Mapping))) and len(args) == 2:
            out.append(args[1])
    return out


def _fields_at(model: Schema, parts: Sequence[str | int]) -> set[str]:
    """Valid key names of the mapping at ``parts`` (empty if it is not a model)."""
    current: list[Any] = [model]
    for p in parts:
        current = [c for tp in current for c in _children(tp, p)]
    names: set[str] = set()
    for tp in current:
        for t in _unwrap(tp):
            fields = _model_fields(t)
            if fields is not None:
                names.update(f.alias or n for n, f in fields.items())
    return names


_EXPECTED = "Input should be a valid "
#: A pydantic dataclass reports an unknown or a missing key as a call's argument: the same mistakes.
_KINDS = {"unexpected_keyword_argument": "extra_forbidden", "missing_argument": "missing"}


def _expected(msgs: list[str]) -> str:
    """``["Input should be a valid list", "Input should be a valid integer"]`` -> ``list or integer``."""
    kinds = [re.sub(r"^dictionary or instance of (\w+)$", r"\1 mapping", m.removeprefix(_EXPECTED)) for m in msgs]
    kinds = list(dict.fromkeys(kinds))
    return ", ".join(kinds[:-1]) + (" or " if len(kinds) > 1 else "") + kinds[-1]


def format_errors(exc: ValidationError, model: Schema, data: Any, limit: int = MAX_ERRORS) -> str:
    """pydantic's errors as one line: unknown keys (with a suggestion) first, then the others.

    ``model`` (a pydantic model or a pydantic dataclass such as ``LMConfig``) gives the valid keys
    that an unknown key's suggestion is chosen from.

    A required key that an unknown key's suggestion names is the same mistake (a typo) and is not
    repeated; the many complaints about one value that fits no branch of a union become one, about
    the innermost part of the value that is wrong.
    """
    unknown: list[str] = []
    suggested: set[str] = set()
    missing: list[tuple[str, str]] = []
    others: list[str] = []
    # union values: root key path -> {inner key path: (messages, value)}
    unions: dict[str, dict[str, tuple[int, list[str], Any]]] = {}
    in_union: set[str] = set()  # roots of union values whose only problem is an unknown key
    for err in exc.errors():
        kind = _KINDS.get(err["type"], err["type"])
        parts, branch, value = _walk(data, tuple(err["loc"]), missing_last=kind == "missing")
        where = key_path(parts)
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if kind == "extra_forbidden" and parts:
            close = difflib.get_close_matches(str(parts[-1]), sorted(_fields_at(model, parts[:-1])), n=1)
            hint = ""
            if close:
                suggested.add(meant := key_path([*parts[:-1], close[0]]))
                hint = f" (did you mean {meant!r}?)"
            unknown.append(f"unknown key {where!r}{hint}")
            if branch is not None:  # the value fits a branch but for this key: the rest is noise
                in_union.add(key_path(parts[:branch]))
        elif kind == "missing":
            missing.append((where, f"{where}: required key missing" if where else "a required key is missing"))
        elif branch is not None:
            group = unions.setdefault(key_path(parts[:branch]), {})
            group.setdefault(where, (len(parts), [], value))[1].append(msg)
        else:
            said = repr(value) in msg or str(value) in msg  # the validator's message names it already
            shown = f" (got {show_value(value)})" if parts and _scalar(value) and not said else ""
            others.append(f"{where}: {msg}{shown}" if where else msg)
    for root, group in unions.items():
        if root in in_union:
            continue
        where, (_depth, msgs, value) = max(group.items(), key=lambda kv: kv[1][0])
        typed = [m for m in msgs if m.startswith(_EXPECTED)]
        text = f"must be a valid {_expected(typed)}" if len(typed) == len(msgs) else msgs[0]
        others.append(f"{where or '(top level)'}: {text} (got {show_value(value)})")
    lines = unknown + [line for where, line in missing if where not in suggested] + others
    lines = list(dict.fromkeys(lines))
    more = f" (and {len(lines) - limit} more)" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
