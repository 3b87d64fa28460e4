"""Reward-model pipelines: a typed job in, a typed result out, for ``lmbricks reward train | eval | warm``.

Pairs are named by a *spec*: a JSONL file (prompt, chosen, rejected) or a built-in set
(``builtin:dialogue|chitchat|champ``), with an optional ``@split``, and several joined by ``+``
(``builtin:champ@validation+builtin:champ@test``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lmbricks.config import validate
from lmbricks.reward.pairs import Pair, load_pairs
from lmbricks.reward.train import RewardTrainConfig
from lmbricks.reward.warm import Progress, no_progress


def pair_spec_files(*specs: str) -> list[Path]:
    """The JSONL files that pair specs name (``builtin:`` sets are not files)."""
    files = []
    for spec in specs:
        for part in spec.split("+"):
            name = part.partition("@")[0]
            if name and not name.startswith("builtin:"):
                files.append(Path(name))
    return files


def load_pair_spec(spec: str, split: str, limit: int | None, seed: int = 0) -> list[Pair]:
    """The pairs of a spec (``split`` where a part names none), the first ``limit`` if given."""
    pairs = []
    for part in spec.split("+"):
        name, _, sp = part.partition("@")
        pairs += load_pairs(name, sp or split, seed)
    return pairs[:limit] if limit else pairs


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardJob(_Strict):
    """``lmbricks reward train``: one reward model on a backbone."""

    model: str = Field(description="backbone: registry name or model directory")
    data: str = Field(description="pair spec of the training pairs")
    out: Path = Field(description="output directory (a *ForSequenceClassification checkpoint)")
    limit: int | None = Field(None, ge=0, description="use the first N pairs (0 or None: all)")
    train: RewardTrainConfig = Field(default_factory=lambda: RewardTrainConfig.model_validate({}))
    force: bool = False


@dataclass
class RewardJobResult:
    """What :func:`train_job` left: the saved model and how training went."""

    out: Path
    pairs: int  # pairs loaded
    skipped: int  # of those, skipped for length
    history: list[dict[str, float]]  # one record per optimizer step ("loss", ...)

    @property
    def recent_loss(self) -> float:
        """Mean loss of the last 10 steps."""
        last = self.history[-10:]
        return sum(h["loss"] for h in last) / len(last)


def train_job(job: RewardJob, progress: Progress = no_progress) -> RewardJobResult:
    """Train and save one reward model; the output is checked against the inputs before any work.

    Raises:
        ConfigError: the output is, lies in or holds an input, or exists without ``force``.
    """
    from lmbricks.checkpoint import check_output
    from lmbricks.hub import reference_paths
    from lmbricks.reward.io import save_reward_model
    from lmbricks.reward.warm import train_reward_model
    from lmbricks.runtime import resolve_precision

    inputs = [*reference_paths(job.model), *pair_spec_files(job.data)]
    check_output(job.out, inputs, job.force)  # before any work
    pairs = load_pair_spec(job.data, "train", job.limit, job.train.seed)
    rm, tok, history, skipped = train_reward_model(job.model, pairs, job.train, progress)
    info = {
        "data": job.data,
        **job.train.model_dump(),
        "resolved_precision": resolve_precision(job.train.precision, "cpu"),
    }
    save_reward_model(rm, job.out, tok, force=job.force, info=info, inputs=inputs)
    return RewardJobResult(job.out, len(pairs), skipped, history)


@dataclass
class RewardEval:
    """Pairwise accuracy of a reward model on ``pairs`` pairs (``skipped`` more were too long)."""

    pairs: int
    skipped: int
    correct: int  # pairs whose chosen side scored higher
    ci95: tuple[float, float]  # Wilson interval of the accuracy
    mean_margin: float  # mean of chosen minus rejected score

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.pairs, 1)

    def to_dict(self) -> dict[str, Any]:
        """``{"pairs", "skipped", "accuracy", "ci95", "mean_margin"}`` (``lmbricks reward eval --json``)."""
        return {"pairs": self.pairs, "skipped": self.skipped, "accuracy": self.accuracy, "ci95": list(self.ci95),
                "mean_margin": self.mean_margin}  # fmt: skip


def evaluate_reward_model(reward_model: Path, spec: str, split: str, limit: int | None, max_len: int) -> RewardEval:
    """Score the pairs of ``spec`` with a saved reward model (pairs with a side over ``max_len`` are skipped)."""
    from lmbricks.eval.fewshot.scoring import wilson_interval
    from lmbricks.reward.io import load_reward_model
    from lmbricks.reward.train import encode_pairs, precompute, score_features

    rm, tok = load_reward_model(reward_model)
    enc = encode_pairs(tok, load_pair_spec(spec, split, limit), max_len)
    feats = precompute(rm, enc.chosen + enc.rejected, 0)
    n = len(enc.chosen)
    scores = score_features(rm, feats, 0)
    k = int((scores[:n] > scores[n:]).sum())
    margin = float((scores[:n] - scores[n:]).mean()) if n else 0.0
    return RewardEval(n, enc.skipped, k, wilson_interval(k, n), margin)


class WarmJob(_Strict):
    """``lmbricks reward warm``: M members from one initialisation, their weight average and ensemble."""

    model: str = Field(description="backbone: registry name or model directory")
    data: str = Field(description="pair spec of the training pairs")
    out: Path = Field(description="output directory: members/, warm/, results.json, report.html")
    members: int = Field(4, gt=0, description="reward models to average")
    limit: int | None = Field(200, ge=0, description="training pairs (0 or None: all)")
    held_out: str = Field("", description="in-distribution test pairs; default DATA@test")
    shift: list[str] = Field(default_factory=list, description="shifted test pair specs")
    eval_limit: int = Field(100, ge=0, description="pairs per evaluation set (0: all)")
    trainable_layers: int = Field(2, ge=0)
    lrs: list[float] = Field(default_factory=lambda: [1e-4, 2e-4], min_length=1, description="cycled over members")
    epochs: int = Field(2, gt=0)
    inits: list[str] = Field(default_factory=list, description="Baklava: SFT checkpoints, cycled over members")
    force: bool = False


@dataclass
class WarmJobResult:
    """What :func:`warm_job` left: ``results`` as :func:`lmbricks.reward.run_warm` returns them."""

    out: Path
    sets: list[str]  # evaluation set names, in order
    results: dict[str, Any]


def warm_members(job: WarmJob) -> list[RewardTrainConfig]:
    """One config per member: seed i, learning rate ``lrs[i % len(lrs)]``, a shared head initialisation."""
    return [
        validate(
            RewardTrainConfig,
            dict(
                lr=job.lrs[i % len(job.lrs)],
                seed=i,
                head_seed=0,
                epochs=job.epochs,
                trainable_layers=job.trainable_layers,
            ),
            f"reward warm options (member {i})",
        )  # fmt: skip
        for i in range(job.members)
    ]


def warm_eval_sets(job: WarmJob) -> dict[str, list[Pair]]:
    """``{"held_out": ..., <shift name>: ...}``: a shift spec's name drops ``builtin:`` and joins by ``_``."""
    base = job.data.partition("@")[0]
    sets = {"held_out": load_pair_spec(job.held_out or f"{base}@test", "test", job.eval_limit)}
    for s in job.shift:
        sets[s.replace("builtin:", "").replace("+", "_").replace("@", "_")] = load_pair_spec(s, "test", job.eval_limit)
    return sets


def warm_job(job: WarmJob, progress: Progress = no_progress) -> WarmJobResult:
    """Run WARM (Baklava with ``inits``), write results.json and report.html under ``job.out``."""
    from lmbricks.reward.report import write_warm_report
    from lmbricks.reward.warm import run_warm

    cfgs = warm_members(job)
    sets = warm_eval_sets(job)
    res = run_warm(
        job.model, load_pair_spec(job.data, "train", job.limit), sets, cfgs, job.out, force=job.force,
        progress=progress, inits=job.inits or None, inputs=pair_spec_files(job.data, job.held_out, *job.shift),
    )  # fmt: skip
    write_warm_report(res, job.out)
    return WarmJobResult(job.out, list(sets), res)
