"""``tokens transplant``: give a model another tokenizer, as a Hugging Face directory.

:func:`transplant` takes a :class:`TransplantConfig` and returns a :class:`TransplantResult`. The
output vocabulary is the donor's; the model's rows of shared tokens are copied bit for bit, new
tokens are initialised (:mod:`lmbricks.tokens.rows`), the special ids of config.json are remapped
(:mod:`lmbricks.tokens.ids`), and every other tensor is copied unchanged. The output is written to a
temporary directory and renamed when complete; no input is modified.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field

from lmbricks.checkpoint import CheckpointReader, ShardedWriter, atomic_directory, check_output, write_provenance
from lmbricks.checkpoint.provenance import TOKENIZER_FILES
from lmbricks.config import one_of, settings
from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.hub.resolve import resolve_model
from lmbricks.tokens.ids import check_template, remap_ids
from lmbricks.tokens.rows import RowPlan, build_matrix, plan_rows
from lmbricks.tokens.spelling import match_ids
from lmbricks.tokens.vocab import TokenizerSide, read_tokenizer

EMBED = "model.embed_tokens.weight"
HEAD = "lm_head.weight"
METHODS: tuple[str, ...] = ("omp", "mean", "zero")
Progress = Callable[[str, int | None], None]


def _quiet(_name: str, _n: int | None) -> None:
    """A progress callback that shows nothing."""


@settings
class TransplantConfig:
    """How new tokens are initialised.

    Attributes:
        method: ``omp`` (orthogonal matching pursuit in the donor's embedding space, applied to the
            model's rows of the same anchors), ``mean`` (the mean of the model's rows) or ``zero``.
        k: anchors per new token for ``omp`` (mergekit-tokensurgeon's default, 64).
        batch: new tokens per OMP call (memory: about ``batch * (anchors + width * k)`` floats).
    """

    method: Annotated[str, one_of(METHODS, "method")] = "omp"
    k: Annotated[int, Field(ge=1)] = 64
    batch: Annotated[int, Field(ge=1)] = 256


@dataclass
class TransplantResult:
    """What :func:`transplant` wrote.

    Attributes:
        out: the output directory.
        rows: its vocabulary size (embedding rows).
        copied: rows copied from the model; new: rows initialised by ``method``; padding: zero rows
            without a donor token.
        anchors: shared tokens (OMP's dictionary).
        ids: the remapped ``bos_token_id`` / ``eos_token_id`` / ``pad_token_id`` of config.json.
        seconds: wall time.
    """

    out: Path
    method: str
    k: int
    rows: int
    copied: int
    new: int
    padding: int
    anchors: int
    ids: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def resolve_donor(ref: str | Path) -> Path:
    """The donor's directory: a directory as given (tokenizer files suffice), else a model reference.

    Raises:
        ConfigError: neither a directory nor a known model reference.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    return resolve_model(ref)


def _donor_matrices(donor_dir: Path, need: bool) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """The donor's embedding and head matrices (None when it has no weights) and its config vocab_size."""
    if not (donor_dir / "config.json").is_file():
        if need:
            raise ConfigError(
                f"--method omp expresses each new token in the donor's embedding space, and {donor_dir} holds "
                "only a tokenizer: give a model directory or registry name that uses it, or --method mean|zero"
            )
        return None, None, 0
    reader = CheckpointReader(donor_dir)
    size = int(reader.config.get("vocab_size") or 0)
    if not need:
        reader.close()
        return None, None, size
    if EMBED not in reader:
        reader.close()
        raise CheckpointError(f"{donor_dir}: no tensor {EMBED!r}, the donor's embeddings that OMP needs")
    embed = reader.get(EMBED).float()
    head = reader.get(HEAD).float() if HEAD in reader else None
    reader.close()
    return embed, head, size


def _check_finite(name: str, tensor: torch.Tensor, where: Path) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise CheckpointError(f"{where}: tensor {name!r} holds NaN or infinite values; refusing to transplant")


def _matrices(
    reader: CheckpointReader, plan: RowPlan, cfg: TransplantConfig, donor: Path, progress: Progress
) -> dict[str, torch.Tensor]:
    """The new embedding (and untied head) matrices."""
    embed_d, head_d, _size = _donor_matrices(donor, cfg.method == "omp" and plan.new.numel() > 0)
    tied = bool(reader.config.get("tie_word_embeddings", False)) or HEAD not in reader
    out: dict[str, torch.Tensor] = {}
    for name, donor_rows in ((EMBED, embed_d), (HEAD, head_d if head_d is not None else embed_d)):
        if name == HEAD and (tied or HEAD not in reader):
            continue
        model_rows = reader.get(name)
        _check_finite(name, model_rows, reader.file_of(name))
        progress(f"initialising {plan.new.numel()} new rows of {name} ({cfg.method})", plan.new.numel())
        out[name] = build_matrix(plan, model_rows, cfg.method, donor_rows, cfg.k, cfg.batch, lambda n: progress("", n))
        _check_finite(name, out[name], reader.path)
    if HEAD in reader and HEAD not in out:  # a redundant head of a tied model follows the embeddings
        out[HEAD] = out[EMBED]
    return out


def _plan(model: TokenizerSide, donor: TokenizerSide, model_rows: int, donor_size: int) -> RowPlan:
    rows = max(donor.size, donor_size)
    model_keys = {i: key for i, key in model.keys.items() if i < model_rows}
    return plan_rows(match_ids(model_keys, donor.keys, rows), donor.keys, model_keys, model_rows)


def transplant(
    model: str | Path,
    donor: str | Path,
    out: str | Path,
    cfg: TransplantConfig | None = None,
    *,
    force: bool = False,
    command: str | None = None,
    progress: Progress = _quiet,
) -> TransplantResult:
    """Give ``model`` the tokenizer of ``donor`` and write the result to ``out``.

    Args:
        model: a model reference (registry name, Hugging Face directory, ``.gguf``).
        donor: a directory with a Hugging Face tokenizer, or a model reference (whose embeddings
            ``omp`` then uses as the donor-side space).
        out: the output directory (refused when it is, holds or lies inside an input).
        cfg: the :class:`TransplantConfig` (default: OMP, k 64).
        force: replace an existing output that lmbricks wrote.
        command: recorded in ``lmbricks.json`` (default: the API call).
        progress: ``progress(stage, n)`` starts a stage of ``n`` items; ``progress("", n)`` advances it.

    Returns:
        The :class:`TransplantResult`.

    Raises:
        ConfigError: bad inputs or output (before any work), a donor without the model's EOS token.
        CheckpointError: unreadable or non-finite weights, naming the tensor.
    """
    cfg = cfg or TransplantConfig()
    t0 = time.perf_counter()
    model_dir, donor_dir = resolve_model(model), resolve_donor(donor)
    inputs = {"model": model_dir, "donor": donor_dir}
    check_output(out, inputs, force)
    model_side = read_tokenizer(model_dir, "the model")
    donor_side = read_tokenizer(donor_dir, "the donor tokenizer")
    with CheckpointReader(model_dir) as reader:
        if EMBED not in reader:
            raise ConfigError(
                f"{model_dir}: no tensor {EMBED!r}; only models with token embeddings can be transplanted"
            )
        model_rows = reader.info(EMBED).shape[0]
        config = remap_ids(reader.config, model_side, donor_side)
        plan = _plan(model_side, donor_side, model_rows, _donor_matrices(donor_dir, False)[2])
        template = _template(model_side, donor_side)
        new = _matrices(reader, plan, cfg, donor_dir, progress)
        config["vocab_size"] = plan.index.shape[0]
        progress("writing", len(reader.keys()))
        result = _result(Path(out).expanduser().absolute(), cfg, plan, config)
        with atomic_directory(out, force, inputs=inputs) as tmp:
            _write_tensors(tmp, reader, new, progress)
            _write_files(tmp, config, model_dir, donor_side, model_side, template)
            recipe = {"method": cfg.method, "k": cfg.k, **_counts(result)}
            write_provenance(tmp, command=command or "lmbricks.tokens.transplant", recipe=recipe, inputs=inputs)
    result.seconds = time.perf_counter() - t0
    return result


def _write_tensors(tmp: Path, reader: CheckpointReader, new: dict[str, torch.Tensor], progress: Progress) -> None:
    """Every tensor of the model into ``tmp``: the new matrices, the rest unchanged (checked finite)."""
    writer = ShardedWriter(tmp)
    for name in reader:
        tensor = new[name] if name in new else reader.get(name)
        if name not in new:
            _check_finite(name, tensor, reader.file_of(name))
        writer.add(name, tensor)
        progress("", 1)
    writer.finish()


def _template(model: TokenizerSide, donor: TokenizerSide) -> str | None:
    """The model's chat template when the donor has none (checked against the donor's vocabulary)."""
    if donor.chat_template is not None or model.chat_template is None:
        return None
    check_template(model.chat_template, model, donor)
    return model.chat_template


def _write_files(
    tmp: Path, config: dict, model_dir: Path, donor: TokenizerSide, model: TokenizerSide, template: str | None
) -> None:
    """config.json, the donor's tokenizer files, the model's generation config remapped, a kept chat template."""
    with open(tmp / "config.json", "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
        fh.write("\n")
    for name in TOKENIZER_FILES:
        if name != "generation_config.json" and (donor.directory / name).is_file():
            (tmp / name).write_bytes((donor.directory / name).read_bytes())
    gen = model_dir / "generation_config.json"
    if gen.is_file():
        remapped = remap_ids(json.loads(gen.read_text(encoding="utf-8")), model, donor)
        (tmp / gen.name).write_text(json.dumps(remapped, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if template is not None:
        (tmp / "chat_template.jinja").write_text(template, encoding="utf-8")


def _result(out: Path, cfg: TransplantConfig, plan: RowPlan, config: dict) -> TransplantResult:
    rows = plan.index.shape[0]
    ids = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    new = int(plan.new.numel())
    copied = plan.copied
    return TransplantResult(
        out, cfg.method, cfg.k, rows, copied, new, rows - copied - new, int(plan.anchors.numel()), ids
    )


def _counts(result: TransplantResult) -> dict[str, int]:
    return {
        "rows": result.rows,
        "copied": result.copied,
        "new": result.new,
        "padding": result.padding,
        "anchors": result.anchors,
    }


def sample_new_rows(
    model: str | Path, donor: str | Path, count: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded sample of the rows OMP would fit for ``transplant(model, donor, ...)``, and its anchors.

    For measuring OMP on real embeddings (scripts/omp_screen.py) without running a whole transplant.

    Args:
        model: the model reference.
        donor: the donor model reference (its embeddings are the space OMP works in).
        count: new tokens to sample (all of them if fewer).
        seed: the sample's seed.

    Returns:
        ``targets`` ``(count, Dd)``: sampled new tokens' rows of the donor's embedding matrix, and
        ``anchors`` ``(M, Dd)``: the shared tokens' rows, both fp32.
    """
    model_dir, donor_dir = resolve_model(model), resolve_donor(donor)
    embed, _head, size = _donor_matrices(donor_dir, True)
    if embed is None:  # a tokenizer-only donor: _donor_matrices(..., need=True) has refused it already
        raise ConfigError(f"{donor_dir}: no embeddings to sample OMP's rows from")
    with CheckpointReader(model_dir) as reader:
        rows = reader.info(EMBED).shape[0]
    plan = _plan(read_tokenizer(model_dir, "the model"), read_tokenizer(donor_dir, "the donor tokenizer"), rows, size)
    new = plan.new[plan.new < embed.shape[0]]
    pick = new[torch.randperm(new.numel(), generator=torch.Generator().manual_seed(seed))[:count]]
    return embed[pick], embed[plan.anchors[plan.anchors < embed.shape[0]]]
