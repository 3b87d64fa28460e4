"""Acceleration plug-ins after Variator (arXiv 2310.15724): compress the hidden sequence inside a frozen LM.

``layers`` holds the compression and decompression layers (pure modules), ``forward`` the causal
compressed forward pass over lmbricks' :class:`lmbricks.nn.model.LM`, ``train`` the distillation,
``brick`` the brick directory, ``measure`` the prefill and bits-per-byte figures and ``pipeline``
what the CLI calls.
"""
