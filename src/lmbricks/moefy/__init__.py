"""MoEfication: cut a dense model's FFNs into experts, route, run sparsely, heal, densify.

- :class:`MoefyConfig` / :func:`make_config`: experts, top-K, split, router (validated early).
- :mod:`lmbricks.moefy.cluster`: balanced k-means, co-activation and random partitions.
- :mod:`lmbricks.moefy.routers`: centroid, linear and MLP routers (RouterOutput, as `lmbricks.moe`), oracle mass.
- :mod:`lmbricks.moefy.selection`: the top-K and dynamic-K selection rules.
- :class:`MoefiedFFN`: the sparse FFN runtime (gather + per-expert matmuls; zero-skipping for ReLU gates,
  :mod:`lmbricks.moefy.zeroskip`).
- :func:`moefy_model`: convert in memory; :func:`save_moefied`, :func:`load_moefied`, :func:`densify`.
- :func:`heal`: distil the MoEfied model towards the dense one.
- :mod:`lmbricks.moefy.evaluate`: perplexity versus experts used, FFN and model timings.
"""

from lmbricks.moefy.config import MoefyConfig, make_config
from lmbricks.moefy.convert import (
    MoefyInfo,
    check_moefiable,
    mean_fraction,
    moefied_layers,
    moefy_model,
    set_routing,
)
from lmbricks.moefy.io import densify, is_moefied, load_moefied, save_moefied
from lmbricks.moefy.runtime import MoefiedFFN

__all__ = [
    "MoefiedFFN",
    "MoefyConfig",
    "MoefyInfo",
    "check_moefiable",
    "densify",
    "is_moefied",
    "load_moefied",
    "make_config",
    "mean_fraction",
    "moefied_layers",
    "moefy_model",
    "save_moefied",
    "set_routing",
]
