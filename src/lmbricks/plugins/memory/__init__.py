"""The InfLLM memory plug-in: training-free context memory for models with a short trained window.

- ``config``: :class:`InfLLMConfig` (sinks, window, blocks, representatives, top-k, chunk size).
- ``store``: :class:`LayerMemory`, one layer's past as sinks + blocks + a local window, and its attention.
- ``plug``: :class:`MemoryPlug`, swapping the attention of lmbricks' LM or a transformers Llama/Qwen2.
- ``generate``: chunked prefill and greedy decoding with or without memory (the pipeline).
- ``passkey``: the passkey-retrieval benchmark and its real-text variant.
"""
