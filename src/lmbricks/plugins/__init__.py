"""Plug-in bricks beyond task adapters: ``memory`` (InfLLM long-context memory)."""
