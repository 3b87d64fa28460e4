"""Merge methods, one module each; importing this package registers them all."""

from lmbricks.merge.methods import (  # noqa: F401
    breadcrumbs,
    breadcrumbs_ties,
    dare_linear,
    dare_ties,
    della,
    della_linear,
    linear,
    model_stock,
    multislerp,
    passthrough,
    slerp,
    task_arithmetic,
    ties,
)
