"""Exceptions users see. Each message names the file, tensor, field or package that is wrong."""

from __future__ import annotations


class LmbricksError(Exception):
    """Base class: an error with a message meant for the user (the CLI prints it without a traceback)."""


class ConfigError(LmbricksError):
    """A config, recipe or argument is invalid; raised before any work is done."""


class CheckpointError(LmbricksError):
    """A checkpoint file is missing, truncated, malformed or inconsistent."""


class FetchError(LmbricksError):
    """A registry download failed or its content did not match the pinned hash."""


class UnknownNameError(LmbricksError):
    """A registry name (model, domain, method) is not known."""


class MergeError(LmbricksError):
    """A merge cannot be computed from these inputs (non-finite weights, a degenerate tensor); names the
    tensor. Raised while streaming; the output directory is then never created."""
