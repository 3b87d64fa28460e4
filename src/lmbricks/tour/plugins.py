"""Tour section ``plugins``: the three plug-in kinds of issue 17 at tour size on the default model.

1. **Knowledge** (:mod:`lmbricks.plugins.knowledge`): a LoRA plug-in trained for a few steps on the
   training part of one Debian handbook section, then asked that section's cloze questions (items
   from its held-out sentences) with and without the plug-in.
2. **Memory** (:mod:`lmbricks.plugins.memory`, InfLLM): a passkey hidden a few hundred tokens
   before a small local window, retrieved by InfLLM and lost by the sliding window alone.
3. **Acceleration** (:mod:`lmbricks.plugins.accelerate`, Variator): an r = 2 compression plug-in
   distilled for a few steps; its prefill saving (FLOPs and process CPU time) and bits per byte.

The full measurements (more items, 64k passkeys, longer training) are in docs/plugins.md; this
section shows that each kind runs end to end and what it does at a size the tour can afford.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmbricks.plugins.memory.config import InfLLMConfig
from lmbricks.tour.run import SummaryRow, TourContext

#: The knowledge plug-in's document and the section whose words serve as distractors.
DOCUMENT, OTHER = "quotas", "dhcp"
#: A small window, so that a passkey a few hundred tokens long is already beyond it.
SMALL_MEMORY = InfLLMConfig(sinks=32, window=256, block_size=32, representatives=4, top_k=4, chunk_size=128)


def memory_config(trained: int | None) -> InfLLMConfig:
    """:data:`SMALL_MEMORY`, or a quarter-sized one where the model's trained window is shorter (tiny test models)."""
    if trained is None or trained > SMALL_MEMORY.window + SMALL_MEMORY.chunk_size:
        return SMALL_MEMORY
    return InfLLMConfig(
        sinks=8, window=trained // 4, block_size=16, representatives=2, top_k=4, chunk_size=trained // 4
    )


@dataclass(frozen=True)
class PluginsBudget:
    """How much the section measures (quick mode trims it)."""

    knowledge_steps: int
    questions: int  # cloze items of the document asked (at most)
    lengths: tuple[int, ...]  # passkey prompt lengths (tokens)
    depths: tuple[float, ...]  # passkey depths
    distill_steps: int  # batches of 2 x distill_len tokens
    distill_len: int
    prefill_tokens: int  # prompt length timed
    bpb_windows: int  # 256-token en_prose windows scored


QUICK = PluginsBudget(3, 4, (768,), (0.5,), 3, 128, 512, 1)
FULL = PluginsBudget(20, 8, (768, 1536), (0.25, 0.5, 0.75), 30, 256, 1024, 4)


def plugins_section(ctx: TourContext) -> list[SummaryRow]:
    """A knowledge plug-in asked its document's questions, an InfLLM passkey, an r = 2 prefill saving."""
    b = QUICK if ctx.quick else FULL
    ctx.report.section(
        "Plug-ins: knowledge, memory, acceleration",
        "Three kinds of brick beyond task adapters (issue 17), each plugged into the frozen default model and "
        "removed again. Tour-sized: the full measurements are in docs/plugins.md.",
    )
    knowledge = _knowledge_part(ctx, b)
    memory = _memory_part(ctx, b)
    accelerate = _accelerate_part(ctx, b)
    ctx.results["plugins"] = {"knowledge": knowledge, "memory": memory, "accelerate": accelerate}
    n = knowledge["questions"]
    return [
        ("plugins", "knowledge: cloze right, none -> plug-in", f"{knowledge['none']}/{n} -> {knowledge['plugin']}/{n}"),
        ("plugins", f"memory: passkey beyond a {memory['window']}-token window", _passkey_cell(memory)),
        ("plugins", "accelerate r=2: prefill CPU saved", f"{accelerate['prefill_cpu_saved']:.0%}"),
        ("plugins", "accelerate r=2: bits per byte change", f"{accelerate['bpb_change']:+.1%}"),
    ]


def _passkey_cell(memory: dict[str, Any]) -> str:
    acc = memory["accuracy"]
    return f"infllm {acc['infllm']:.0%}, sliding {acc['sliding']:.0%}"


def _knowledge_part(ctx: TourContext, b: PluginsBudget) -> dict[str, Any]:
    """Train one plug-in on the document's training part; score its cloze items without and with it."""
    from lmbricks.adapters.base import base_model
    from lmbricks.hub import load_hf_model
    from lmbricks.plugins.knowledge.cloze import build_items
    from lmbricks.plugins.knowledge.config import knowledge_config
    from lmbricks.plugins.knowledge.eval_pipeline import handbook_sections
    from lmbricks.plugins.knowledge.evaluate import score_item
    from lmbricks.plugins.knowledge.pipeline import KnowledgeTrainJob, train_knowledge
    from lmbricks.plugins.knowledge.plug import plugged
    from lmbricks.runtime import autocast

    train, items = build_items(handbook_sections((DOCUMENT, OTHER)), per_document=b.questions)
    items = [i for i in items if i.document == DOCUMENT]
    cfg = knowledge_config(steps=b.knowledge_steps, precision=ctx.precision)
    with tempfile.TemporaryDirectory() as scratch:
        doc = Path(scratch) / f"{DOCUMENT}.txt"
        doc.write_text(train[DOCUMENT], encoding="utf-8")
        ks = train_knowledge(KnowledgeTrainJob(ctx.model_ref, (str(doc),), Path(scratch) / "kb", cfg), "tour")
        model, tok = load_hf_model(base_model(ctx.model_ref).path)
        with autocast(ctx.precision, "cpu"):
            none = [score_item(model, tok, i, None)[0] == i.answer for i in items]
            with plugged(model, ks.get(DOCUMENT).path, base_model(ctx.model_ref)) as m:
                plug = [score_item(m, tok, i, None)[0] == i.answer for i in items]
    plugin = ks.get(DOCUMENT)
    ctx.report.text(
        f"**Knowledge.** A rank-{cfg.rank} LoRA plug-in is trained for {cfg.steps} steps on the training part of "
        f"the handbook section *{DOCUMENT}* ({len(train[DOCUMENT]):,} characters; loss {plugin.loss_first:.2f} to "
        f"{plugin.loss_last:.2f}), then asked the section's cloze questions: a word of a held-out sentence, "
        f"4 candidates. The base alone answers {sum(none)} of {len(items)}, with the plug-in {sum(plug)}."
    )
    ctx.report.table(
        [[i.query(), i.candidates[i.answer], "yes" if a else "no", "yes" if p else "no"]
         for i, a, p in zip(items, none, plug, strict=True)],
        ["held-out sentence", "answer", "base right", "plug-in right"],
    )  # fmt: skip
    return {"document": DOCUMENT, "steps": cfg.steps, "loss_first_last": [plugin.loss_first, plugin.loss_last],
            "questions": len(items), "none": sum(none), "plugin": sum(plug)}  # fmt: skip


def _memory_part(ctx: TourContext, b: PluginsBudget) -> dict[str, Any]:
    """Passkeys hidden before a small window: InfLLM against the sliding window, with a heat map."""
    from lmbricks.plugins.memory.passkey import PasskeyJob, accuracy_heatmap, run_passkey
    from lmbricks.plugins.memory.plug import trained_window

    model, tok = ctx.inference_model()
    c = memory_config(trained_window(model))
    job = PasskeyJob(lengths=b.lengths, depths=b.depths, methods=("sliding", "infllm"), seed=3)
    with torch.no_grad():
        result = run_passkey(model.eval(), tok, job, c)
    acc = {m: sum(t.correct for t in result.trials if t.method == m) / (len(result.trials) // 2) for m in job.methods}
    ctx.report.text(
        f"**Memory (InfLLM).** A 5-digit key is hidden at depths {', '.join(f'{d:.0%}' for d in b.depths)} of "
        f"{', '.join(map(str, b.lengths))}-token prompts, read with a local window of {c.window} tokens, {c.sinks} "
        f"sinks and {c.top_k} retrieved blocks of {c.block_size}. InfLLM finds {acc['infllm']:.0%} of the keys, "
        f"the sliding window alone (the same sinks and window, no retrieval) {acc['sliding']:.0%}."
    )
    ctx.report.table(
        [[t.method, t.length, f"{t.depth:.0%}", t.key, repr(t.answer[:12]), "yes" if t.correct else "no",
          f"{t.prefill_cpu_s:.1f}"] for t in result.trials],
        ["method", "tokens", "depth", "key", "answer (start)", "correct", "prefill CPU s"],
    )  # fmt: skip
    png = accuracy_heatmap(result, "infllm", ctx.out_dir / "plugins_passkey.png")
    ctx.report.figure(png, "InfLLM passkey accuracy, prompt length x depth (one key per cell).")
    trials = [vars(t) for t in result.trials]
    return {"window": c.window, "lengths": list(b.lengths), "depths": list(b.depths), "accuracy": acc,
            "trials": trials}  # fmt: skip


def _accelerate_part(ctx: TourContext, b: PluginsBudget) -> dict[str, Any]:
    """Distil an r = 2 plug-in for a few steps; prefill FLOPs and CPU time saved, bits per byte."""
    from lmbricks.data.tokens import token_chunks
    from lmbricks.eval.domains import held_out_texts
    from lmbricks.plugins.accelerate.layers import AcceleratePlugin
    from lmbricks.plugins.accelerate.measure import measure_plugin
    from lmbricks.plugins.accelerate.train import distill

    tokens = b.distill_steps * 2 * b.distill_len
    train = held_out_texts(("en_prose",), "train", tokens * 6)["en_prose"]
    test = held_out_texts(("en_prose",), "test", b.bpb_windows * 256 * 6)
    model, tok = ctx.inference_model()
    batches = token_chunks(tok, [train], b.distill_len, tokens).reshape(b.distill_steps, 2, b.distill_len)
    cfg = model.cfg
    plugin = AcceleratePlugin(cfg.hidden_size, 2, max(1, cfg.num_layers // 5), 256)
    run = distill(model, plugin, batches, keep_last=b.distill_len // 4)
    m = measure_plugin(model, tok, plugin, test, windows=b.bpb_windows, prompt=b.prefill_tokens)
    bpb = m["bpb_mean"]
    change = bpb["plugin"] / bpb["plain"] - 1
    ctx.report.text(
        f"**Acceleration (Variator).** An r = 2 plug-in ({m['parameters']:,} parameters, "
        f"{m['parameters_share']:.2%} of the base) merges every 2 hidden vectors into one after layer {m['layer']}. "
        f"Distilled for {len(run.losses)} steps (KL {run.losses[0]:.2f} to {run.losses[-1]:.2f} nats), it saves "
        f"{m['prefill_flops_saved']:.0%} of the FLOPs and {m['prefill_cpu_saved']:.0%} of the process CPU time of a "
        f"{b.prefill_tokens}-token prefill, at {change:+.1%} bits per byte on en_prose "
        f"({bpb['plain']:.3f} -> {bpb['plugin']:.3f}; truncating the prompt to the same cost: {bpb['truncated']:.3f}). "
        "So few steps leave the plug-in undertrained: the saving is the method's, the quality is not yet."
    )
    return m | {"distill_steps": len(run.losses), "kl_first_last": [run.losses[0], run.losses[-1]],
                "bpb_change": change}  # fmt: skip
