"""Calling transformers and PEFT the way the installed versions expect, so that users see no deprecation noise.

transformers 5 renamed a model's ``past_key_values`` argument and output to ``cache`` (the old name
still works, with a FutureWarning and a logged note on every process); older versions know only
``past_key_values``. PEFT (0.21) still reads a transformers model's deprecated
``is_gradient_checkpointing`` property when it wraps a model: a warning no call of ours can avoid.
transformers' own progress bars are switched off around our loads and saves (:func:`quiet_loading`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@functools.cache
def cache_name() -> str:
    """The name of a causal LM's key/value cache, as argument and as output field, in the installed transformers.

    Returns:
        ``"cache"`` (transformers 5) or ``"past_key_values"`` (earlier versions).
    """
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def with_cache(cache: Any) -> dict[str, Any]:
    """The keyword argument passing ``cache`` (a ``DynamicCache``, legacy tuples or None) to a model call.

    Example: ``model(input_ids=ids, use_cache=True, **with_cache(past))``.
    """
    return {cache_name(): cache}


def output_cache(out: Any) -> Any:
    """The key/value cache of a model call's output ``out`` (None where the call kept none)."""
    return getattr(out, cache_name(), None)


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Wrap a model with PEFT (``get_peft_model``, ``PeftModel.from_pretrained``) without its deprecation warning.

    PEFT's wrapper reads ``model.is_gradient_checkpointing``, which transformers 5 deprecates in favour of
    ``is_activation_checkpointing``: library noise, filtered here and nowhere else, by its exact message.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' progress bars ("Loading weights", "Writing model shards") off for the calls inside.

    A one-second load printed a bar in the middle of a tour's or a command's output; lmbricks shows its own
    progress where a step takes long. Only the calls inside are silenced: the switch is put back as it was
    (transformers' and huggingface_hub's alike), so a user's own transformers calls keep their bars.
    """
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils import logging as hf_logging

    was_on, hub_was_off = hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()  # turns huggingface_hub's bars back on too ...
        if hub_was_off:
            disable_progress_bars()  # ... unless they were off before
