"""Merge methods, one module each (the task-arithmetic family is one module, one row per method);
importing this package registers them all."""

from lmbricks.merge.methods import (  # noqa: F401
    arcee_fusion,
    karcher,
    linear,
    model_stock,
    multislerp,
    nearswap,
    nuslerp,
    passthrough,
    ram,
    sce,
    slerp,
    task_arithmetic,
)
