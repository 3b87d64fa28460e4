"""Chat rendering: the model's own chat template, or a documented ChatML fallback, and its parser.

When a tokenizer carries no ``chat_template``, lmbricks renders chats with :data:`FALLBACK_TEMPLATE`
(ChatML, as SmolLM2 and Qwen2 use, without any default system message)::

    <|im_start|>user
    What is 2 + 2?<|im_end|>
    <|im_start|>assistant
    4<|im_end|>

If the tokenizer lacks the ``<|im_start|>`` / ``<|im_end|>`` tokens they are plain text. The loss
spans of a chat (see :func:`response_spans`) are found by rendering growing prefixes of it, which
requires the template to be *prefix-stable* (rendering the first k messages gives a prefix of
rendering all of them); a template that is not raises an error rather than mis-masking.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lmbricks.errors import ConfigError

FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CHATML = re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)<\|im_end\|>\n?", re.DOTALL)


def has_own_template(tokenizer: Any) -> bool:
    """Whether the tokenizer ships a chat template (else :data:`FALLBACK_TEMPLATE` is used)."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The chat as text in the tokenizer's template (or the fallback).

    Args:
        tokenizer: a Hugging Face tokenizer.
        messages: ``{"role", "content"}`` dicts.
        add_generation_prompt: end with the opening of an assistant turn (for generation).

    Returns:
        The rendered text (special tokens as text; tokenise it with ``add_special_tokens=False``).
    """
    template = None if has_own_template(tokenizer) else FALLBACK_TEMPLATE
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=template
    )
    return str(text)


def parse_chatml(text: str) -> list[dict[str, str]]:
    """Messages of a ChatML rendering (the inverse of the fallback template; SmolLM2's too).

    Raises:
        ConfigError if text remains outside ``<|im_start|>role ... <|im_end|>`` turns.
    """
    messages, pos = [], 0
    for m in _CHATML.finditer(text):
        if m.start() != pos:
            raise ConfigError(f"not ChatML at character {pos}: {text[pos : pos + 40]!r}")
        messages.append({"role": m.group(1), "content": m.group(2)})
        pos = m.end()
    if pos != len(text):
        raise ConfigError(f"not ChatML at character {pos}: {text[pos : pos + 40]!r}")
    return messages


def response_spans(
    tokenizer: Any, messages: Sequence[dict[str, str]], where: str = "chat"
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character spans that carry loss (each assistant turn).

    A span runs from the end of the generation prompt that opens the turn to the end of the turn's
    rendering, so it includes the end-of-turn marker (the model learns to stop).

    Returns:
        ``(text, [(start, end), ...])`` with one span per assistant message.
    """
    text = render_chat(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render_chat(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render_chat(tokenizer, messages[: i + 1])
        if not upto.startswith(prefix) or not text.startswith(upto):
            raise ConfigError(
                f"{where}: the chat template is not prefix-stable at message {i} "
                "(cannot tell prompt from response tokens)"
            )
        spans.append((len(prefix), len(upto)))
    return text, spans
