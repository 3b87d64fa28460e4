"""Training reward models end to end, and WARM: weight-averaged reward models (arXiv 2401.12187).

WARM fine-tunes M reward models from one shared initialisation (here: the same backbone and the
same head initialisation) with different data orders and learning rates, then averages their
weights uniformly (``lmbricks merge`` with the ``linear`` method). The experiment compares the
average, each member and the members' prediction ensemble (mean score) on held-out pairs of the
training distribution and on pairs from other distributions.

**Baklava** (the WARM paper's variant) initialises the members from successive checkpoints of one
SFT run instead of one shared checkpoint (``inits``). With the lower layers frozen here, that needs
an SFT run that also froze them (``sft.train_last_layers <= trainable_layers``): the checkpoints
then share the trunk, so the cached trunk features serve every member; :func:`baklava_top_state`
checks it, tensor by tensor, and refuses checkpoints whose trunk differs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.eval.fewshot.scoring import wilson_interval
from lmbricks.reward.io import average_heads, load_reward_model, save_reward_model
from lmbricks.reward.loss import pair_accuracy
from lmbricks.reward.model import RewardModel
from lmbricks.reward.pairs import Pair
from lmbricks.reward.train import (
    RewardTrainConfig,
    encode_pairs,
    precompute,
    score_features,
    train_on_features,
)

Features = tuple[list[Tensor], list[Tensor]]
Progress = Callable[[str, int | None], None]


def no_progress(_: str, __: int | None = None) -> None:
    """The default progress callback: reports nothing."""


def base_reward_model(ref: str) -> tuple[RewardModel, Any]:
    """A reward model on the backbone ``ref`` (HF dir / registry name) with a zero head, and its tokenizer."""
    from lmbricks.nn.load import load_model

    lm, tokenizer = load_model(ref, dtype=torch.float32, hf_fallback=False)
    return RewardModel(lm), tokenizer


def pair_features(
    rm: RewardModel, tokenizer: Any, sets: Mapping[str, Sequence[Pair]], cfg: RewardTrainConfig,
    progress: Progress = no_progress,
) -> tuple[dict[str, Features], dict[str, int]]:  # fmt: skip
    """Frozen-trunk features of every set (computed once), and the number of pairs skipped per set."""
    start = rm.num_layers - cfg.trainable_layers
    feats, skipped = {}, {}
    for name, pairs in sets.items():
        enc = encode_pairs(tokenizer, pairs, cfg.max_len, cfg.format)
        progress(f"features {name}", 2 * len(enc.chosen))
        seqs = enc.chosen + enc.rejected
        f = precompute(rm, seqs, start, on_batch=lambda k: progress("", k))
        feats[name] = (f[: len(enc.chosen)], f[len(enc.chosen) :])
        skipped[name] = enc.skipped
    return feats, skipped


def scores_of(rm: RewardModel, feats: Features, start: int) -> tuple[Tensor, Tensor]:
    """(chosen scores, rejected scores) of a feature set."""
    return score_features(rm, feats[0], start), score_features(rm, feats[1], start)


def _acc(rc: Tensor, rr: Tensor) -> dict[str, Any]:
    k, n = int((rc > rr).sum()), int(rc.numel())
    lo, hi = wilson_interval(k, n)
    return {"accuracy": pair_accuracy(rc, rr), "correct": k, "n": n, "ci95": [lo, hi]}


def train_reward_model(
    ref: str, pairs: Sequence[Pair], cfg: RewardTrainConfig, progress: Progress = no_progress
) -> tuple[RewardModel, Any, list[dict[str, float]], int]:
    """Train one reward model on ``pairs`` from the backbone ``ref``.

    Returns:
        ``(reward model, tokenizer, training history, pairs skipped for length)``.
    """
    rm, tokenizer = base_reward_model(ref)
    feats, skipped = pair_features(rm, tokenizer, {"train": pairs}, cfg, progress)
    history = train_on_features(rm, *feats["train"], cfg)
    return rm, tokenizer, history, skipped["train"]


def trained_keys(rm: RewardModel, start: int) -> list[str]:
    """State-dict keys of the trained part: layers from ``start``, the final norm, the head.

    Args:
        rm: the reward model.
        start: the first trained decoder layer.

    Returns:
        The keys, in state-dict order.
    """
    tops = tuple(f"backbone.layers.{i}." for i in range(start, rm.num_layers))
    return [k for k in rm.state_dict() if k.startswith(tops) or k.startswith(("backbone.norm.", "head."))]


def baklava_top_state(rm: RewardModel, ckpt: str | Path, start: int) -> dict[str, Tensor]:
    """The trained part of a reward model initialised from checkpoint ``ckpt`` (Baklava).

    Args:
        rm: the reward model on the base backbone (whose trunk features are cached).
        ckpt: a checkpoint of an SFT run of that backbone.
        start: first trained layer (``num_layers - trainable_layers``).

    Returns:
        ``{key: tensor}`` for the layers from ``start``, the final norm (and the zero head).

    Raises:
        ConfigError: the checkpoint's frozen part (embedding, layers below ``start``) differs from the
        backbone's, so the cached features would not be its features.
    """
    from lmbricks.nn.load import load_model

    lm, _ = load_model(str(ckpt), dtype=torch.float32, hf_fallback=False)
    other = RewardModel(lm).state_dict()
    top = set(trained_keys(rm, start))
    for k, v in rm.state_dict().items():
        if k in top:
            continue
        if k not in other or other[k].shape != v.shape or not torch.equal(other[k], v):
            raise ConfigError(
                f"{ckpt}: tensor {k} differs from the base model's; Baklava with "
                f"trainable_layers={rm.num_layers - start} needs an SFT run that trained only the last "
                f"{rm.num_layers - start} layers (sft.train_last_layers)"
            )
    return {k: other[k].clone() for k in top}


def average_states(states: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Uniform average of state dicts with the same keys (in fp32)."""
    return {k: torch.stack([s[k].float() for s in states]).mean(0) for k in states[0]}


def run_warm(
    ref: str,
    train_pairs: Sequence[Pair],
    eval_sets: Mapping[str, Sequence[Pair]],
    members: Sequence[RewardTrainConfig],
    out: Path,
    force: bool = False,
    use_merge: bool = True,
    progress: Progress = no_progress,
    inits: Sequence[str | Path] | None = None,
    feature_cache: Path | None = None,
    inputs: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """The WARM experiment: M members from one initialisation, their weight average and ensemble.

    Args:
        ref: backbone reference.
        train_pairs: training pairs (shared by the members; each sees its own order).
        eval_sets: named held-out sets (e.g. in-distribution, shifted).
        members: one config per member (same ``trainable_layers``, ``max_len``, ``format``,
            ``head_seed``; differing seeds / learning rates).
        out: output directory: members/, warm/ (the merged reward model), results.json.
        force: replace ``out``.
        use_merge: average with ``lmbricks merge`` (linear) on the saved members; otherwise in memory.
        inits: Baklava: member i starts from checkpoint ``inits[i % len(inits)]`` (successive
            checkpoints of one SFT run of ``ref`` that shares its frozen trunk); default: ``ref``.
        feature_cache: a file holding the trunk features (written when missing, read when present:
            e.g. shared by a WARM and a Baklava run on the same pairs and split).
        inputs: more paths ``out`` must keep apart from (the data files); ``ref`` and ``inits`` are
            added here.

    Returns:
        The results dictionary (also written to ``out/results.json``).
    """
    first = members[0]
    for m in members:
        if (m.trainable_layers, m.max_len, m.format) != (first.trainable_layers, first.max_len, first.format):
            raise ConfigError("WARM members must share trainable_layers, max_len and format")
    out = _prepare_out(out, [ref, *(inits or [])], inputs, force, len(members))
    rm, tokenizer = base_reward_model(ref)
    start = rm.num_layers - first.trainable_layers
    feats, skipped = cached_pair_features(
        rm, tokenizer, {"train": train_pairs, **eval_sets}, first, feature_cache, progress
    )
    scores: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in eval_sets}
    saved = (out / "members", tokenizer) if use_merge else None
    results, member_states, histories = _train_members(rm, feats, members, start, scores, inits, ref, saved, progress)
    results.update(_averages(rm, feats, start, scores, member_states, out if use_merge else None, progress))
    results["mean_member"] = {
        name: sum(m[name]["accuracy"] for m in results["members"]) / len(members) for name in eval_sets
    }
    results["skipped_for_length"] = skipped
    results["n_train_pairs"] = len(feats["train"][0])
    results["trainable_layers"] = first.trainable_layers
    results["model"] = ref
    results["histories"] = [[h["loss"] for h in hist] for hist in histories]
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _train_members(
    rm: RewardModel,
    feats: dict[str, Features],
    members: Sequence[RewardTrainConfig],
    start: int,
    scores: dict[str, list[tuple[Tensor, Tensor]]],
    inits: Sequence[str | Path] | None,
    ref: str,
    saved: tuple[Path, Any] | None,
    progress: Progress,
) -> tuple[dict[str, Any], list[dict[str, Tensor]], list[list[dict[str, float]]]]:
    """Train each member from the shared initialisation (Baklava: its init's top layers), in turn.

    Returns ``({"members": [...], "member_configs": [...]}, member state dicts, loss histories)``;
    each member is saved under ``saved[0]/m{i}`` (with tokenizer ``saved[1]``) when ``saved`` is given.
    """
    init_state = copy.deepcopy(rm.state_dict())
    tops = [baklava_top_state(rm, c, start) for c in inits] if inits else []
    results: dict[str, Any] = {"members": [], "member_configs": []}
    member_states, histories = [], []
    for i, mcfg in enumerate(members):
        progress(f"member {i}", None)
        rm.load_state_dict(init_state)
        if tops:
            rm.load_state_dict(tops[i % len(tops)], strict=False)
        history, entry = _train_member(rm, feats, mcfg, start, scores)
        histories.append(history)
        member_states.append({k: v.detach().clone() for k, v in rm.state_dict().items()})
        results["members"].append(entry)
        results["member_configs"].append({**mcfg.model_dump(), "init": str(inits[i % len(inits)]) if inits else ref})
        if saved is not None:
            save_reward_model(rm, saved[0] / f"m{i}", saved[1], force=True, info=mcfg.model_dump())
    return results, member_states, histories


def _averages(
    rm: RewardModel,
    feats: dict[str, Features],
    start: int,
    scores: dict[str, list[tuple[Tensor, Tensor]]],
    member_states: list[dict[str, Tensor]],
    merge_out: Path | None,
    progress: Progress,
) -> dict[str, Any]:
    """The prediction ensemble (mean of the members' scores) and the weight average, scored.

    The average is made by ``lmbricks merge`` on the members saved under ``merge_out`` (and compared
    with the in-memory average), or in memory when ``merge_out`` is None; ``rm`` ends holding it.

    Returns:
        ``{"ensemble": {set: record}, ["merge_vs_memory_max_abs_diff": float], "warm": {set: record}}``.
    """
    out: dict[str, Any] = {
        "ensemble": {
            name: _acc(torch.stack([s[0] for s in ss]).mean(0), torch.stack([s[1] for s in ss]).mean(0))
            for name, ss in scores.items()
        }
    }
    averaged = average_states(member_states)
    if merge_out is not None:
        out["merge_vs_memory_max_abs_diff"] = _merge_members(rm, merge_out, len(member_states), averaged, progress)
    else:
        rm.load_state_dict(averaged)
    out["warm"] = {name: _acc(*scores_of(rm, feats[name], start)) for name in scores}
    return out


def _train_member(
    rm: RewardModel,
    feats: dict[str, Features],
    cfg: RewardTrainConfig,
    start: int,
    scores: dict[str, list[tuple[Tensor, Tensor]]],
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Train ``rm`` as one member, score every evaluation set (appended to ``scores``).

    Returns:
        (training history, ``{"train_final_loss", <set>: accuracy record, ...}``).
    """
    history = train_on_features(rm, *feats["train"], cfg)
    entry: dict[str, Any] = {"train_final_loss": history[-1]["loss"]}
    for name in scores:
        rc, rr = scores_of(rm, feats[name], start)
        scores[name].append((rc, rr))
        entry[name] = _acc(rc, rr)
    return history, entry


def _prepare_out(
    out: Path, refs: Sequence[str | Path], inputs: Sequence[str | Path], force: bool, members: int
) -> Path:
    """The output directory, checked against every input and marked as lmbricks' own."""
    from lmbricks.checkpoint import check_output, write_provenance
    from lmbricks.hub import reference_paths

    out = check_output(out, [*inputs, *(p for r in refs for p in reference_paths(r))], force)
    out.mkdir(parents=True, exist_ok=True)
    # marks the folder as lmbricks' own, so that a later --force may replace what is in it
    recipe = {"warm": {"members": members, "model": str(refs[0])}}
    write_provenance(out, command="lmbricks reward warm", recipe=recipe, inputs={})
    return out


def cached_pair_features(
    rm: RewardModel,
    tokenizer: Any,
    sets: Mapping[str, Sequence[Pair]],
    cfg: RewardTrainConfig,
    feature_cache: Path | None,
    progress: Progress = no_progress,
) -> tuple[dict[str, Features], dict[str, int]]:
    """:func:`pair_features`, read from ``feature_cache`` when it exists (and written there when not).

    Raises:
        ConfigError: the cache holds features of another split or other set sizes.
    """
    start = rm.num_layers - cfg.trainable_layers
    key = {"start": start, "sets": {k: len(v) for k, v in sets.items()}}
    if feature_cache is not None and Path(feature_cache).exists():
        cached = torch.load(feature_cache, map_location="cpu", weights_only=True)
        if cached["key"] != key:
            raise ConfigError(f"{feature_cache}: features of another split or set sizes ({cached['key']})")
        return cached["feats"], cached["skipped"]
    feats, skipped = pair_features(rm, tokenizer, sets, cfg, progress)
    if feature_cache is not None:
        torch.save({"key": key, "feats": feats, "skipped": skipped}, feature_cache)
    return feats, skipped


def _merge_members(rm: RewardModel, out: Path, members: int, averaged: dict[str, Tensor], progress: Progress) -> float:
    """Average the saved members with ``lmbricks merge`` (linear) into ``out/warm`` and load it into ``rm``.

    Returns:
        The largest difference between the merged weights and the in-memory average.
    """
    from lmbricks.merge import merge

    progress("lmbricks merge (linear)", None)
    recipe = {
        "merge_method": "linear",
        "models": [{"model": str(out / "members" / f"m{i}"), "parameters": {"weight": 1.0}} for i in range(members)],
        "dtype": "float32",
    }
    merge(recipe, out / "warm", force=True, command="lmbricks reward warm")
    average_heads([out / "members" / f"m{i}" for i in range(members)], out / "warm")
    warm_rm, _ = load_reward_model(out / "warm")
    merged = warm_rm.state_dict()
    rm.load_state_dict(merged)
    return max(float((merged[k].float() - averaged[k]).abs().max()) for k in averaged if k in merged)
