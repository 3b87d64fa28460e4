"""Knowledge plug-ins (after arXiv 2305.17660 and 2305.17691): a document becomes a LoRA brick.

- ``config.py``: the training settings (a :class:`~lmbricks.adapters.LoraTrainConfig` with knowledge defaults).
- ``index.py``: the BM25 routing index over the documents, shipped in the plug-in directory.
- ``pipeline.py``: ``train`` (one brick per document, base frozen), ``list`` and ``ask`` (route, plug, answer).
- ``plug.py``: plug one knowledge brick into a transformers model and unplug it (base weights untouched).
"""
