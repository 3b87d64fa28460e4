"""Few-shot prompts: k demonstrations, direct or chain-of-thought answers, plain text or chat turns.

Plain format (what base models expect)::

    {instruction}

    Question: {demo question}
    Answer: {demo answer}                                  (direct)
    Answer: {demo rationale} The answer is {demo answer}.  (chain of thought)

    Question: {question}
    Answer:

Zero-shot chain of thought ends with ``Answer: Let's think step by step.`` (Kojima et al.). Chat
format puts each demonstration in a user / assistant turn pair and renders the chat with the
model's template (``lmbricks.sft.render_chat``), ending with the assistant generation prompt.
"""

from __future__ import annotations

from typing import Any

from lmbricks.eval.fewshot.tasks import Item, Task

STOP_PLAIN = ["\n\nQuestion:", "\nQuestion:"]
COT_TRIGGER = "Let's think step by step."


def instruction(task: Task, cot: bool) -> str:
    """The task instruction plus the answer-format request of the mode."""
    tail = " Think step by step, then finish with 'The answer is X.'" if cot else " Give only the final answer."
    return task.instruction + tail


def demo_answer(item: Item, cot: bool) -> str:
    """A demonstration's answer text: the answer, or its rationale then ``The answer is X.``."""
    if not cot:
        return item.answer
    rationale = " ".join(item.rationale.split())  # one paragraph: blank lines separate demonstrations
    return f"{rationale} The answer is {item.answer}."


def build_prompt(task: Task, item: Item, shots: int, cot: bool, fmt: str = "plain", tokenizer: Any = None) -> str:
    """The prompt for ``item`` with the first ``shots`` demonstrations of ``task``.

    Args:
        task: the task (its ``demos`` are used in order, so k-shot demos are nested in (k+1)-shot).
        item: the question to answer.
        shots: number of demonstrations (at most ``len(task.demos)``).
        cot: chain-of-thought demonstrations and trigger.
        fmt: ``plain`` or ``chat`` (needs ``tokenizer``).

    Returns:
        The prompt text.
    """
    if shots > len(task.demos):
        raise ValueError(f"task {task.name} has {len(task.demos)} demonstrations, asked for {shots}")
    demos = task.demos[:shots]
    if fmt == "chat":
        from lmbricks.sft.template import render_chat

        msgs: list[dict[str, str]] = []
        for i, d in enumerate(demos):
            q = f"{instruction(task, cot)}\n\n{d.question}" if i == 0 else d.question
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": demo_answer(d, cot)}]
        q = item.question if demos else f"{instruction(task, cot)}\n\n{item.question}"
        msgs.append({"role": "user", "content": q})
        return render_chat(tokenizer, msgs, add_generation_prompt=True)
    if fmt != "plain":
        raise ValueError(f"unknown prompt format {fmt!r} (plain or chat)")
    parts = [instruction(task, cot)]
    for d in demos:
        parts.append(f"Question: {d.question}\nAnswer: {demo_answer(d, cot)}")
    parts.append(f"Question: {item.question}\nAnswer:" + (f" {COT_TRIGGER}" if cot and not demos else ""))
    return "\n\n".join(parts)


def stop_strings(fmt: str, cot: bool) -> list[str]:
    """Where a generation ends: the next ``Question:`` (plain), end of line for direct answers."""
    stops = list(STOP_PLAIN) if fmt == "plain" else []
    if not cot:
        stops.append("\n")
    return stops
