"""Emergent bricks in dense models: activation capture, sparsity and masking, capability neurons.

- :func:`find_ffns` / :class:`FFNBlock`: the feed-forward blocks of a Hugging Face model.
- :func:`tap_activations` / :func:`edit_activations`: read or replace intermediate activations.
- :mod:`lmbricks.analysis.masking`: per-token top-k and CETT masking (pure tensor functions).
- :func:`analyze_sparsity`: metric distributions, masking curve, CETT (``lmbricks analyze sparsity``).
- :func:`analyze_neurons`: capability neurons and the pruning matrix (``lmbricks analyze neurons``).
- :func:`run_sparsity` / :func:`run_neurons` (:mod:`~lmbricks.analysis.pipeline`): from a model
  reference to the HTML report, what the two commands run.
"""

from lmbricks.analysis.corpus import domain_chunks, mean_nll, perplexities, relative_change
from lmbricks.analysis.ffn import FFNBlock, find_ffns
from lmbricks.analysis.hooks import edit_activations, tap_activations
from lmbricks.analysis.masking import (
    cett,
    cett_threshold,
    keep_count,
    mask_threshold,
    mask_topk,
    neuron_scores,
    topk_mask,
)
from lmbricks.analysis.neurons import NeuronConfig, NeuronResult, analyze_neurons, specificity
from lmbricks.analysis.pipeline import AnalysisRun, run_neurons, run_sparsity
from lmbricks.analysis.reporting import write_neuron_report, write_sparsity_report
from lmbricks.analysis.sparsity import SparsityConfig, SparsityResult, analyze_sparsity

__all__ = [
    "AnalysisRun",
    "FFNBlock",
    "NeuronConfig",
    "NeuronResult",
    "SparsityConfig",
    "SparsityResult",
    "analyze_neurons",
    "analyze_sparsity",
    "cett",
    "cett_threshold",
    "domain_chunks",
    "edit_activations",
    "find_ffns",
    "keep_count",
    "mask_threshold",
    "mask_topk",
    "mean_nll",
    "neuron_scores",
    "perplexities",
    "relative_change",
    "run_neurons",
    "run_sparsity",
    "specificity",
    "tap_activations",
    "topk_mask",
    "write_neuron_report",
    "write_sparsity_report",
]
