"""Benchmark: ``lmbricks adapters extract`` against ``mergekit-extract-lora`` (0.1.5) on the default model.

The fine-tune is a real fine-tune delta: SmolLM2-135M-Instruct plus the four shipped bricks
(``bricks/smollm2-135m-instruct/{zh,math,code,dialogue}``, each at weight 1) merged into its weights,
saved in fp32; its delta has rank <= 32 per module. Both tools extract it at each rank (the seven
projection targets; embeddings are unchanged, so mergekit runs with ``-e embed_tokens -e lm_head``).
Per tool and rank: the relative Frobenius reconstruction error per module (mean, max), the largest
relative difference between the two tools' ``B @ A``, and the bits per byte of base + adapter (loaded
through PEFT) on the held-out text of each domain, next to the base and the fine-tune themselves.

Usage: OMP_NUM_THREADS=1 python bench/extract_parity.py OUT_DIR [--ranks 8,16,32] [--bytes 6000]
CPU seconds of each tool's extraction (mergekit's includes its ~10 s import) on a shared machine.
Prints one JSON object (committed as docs/bench/extract-parity-*.json).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from lmbricks.adapters import load_factors
from lmbricks.adapters.extract import extract_brick
from lmbricks.checkpoint import CheckpointReader, save_state_dict
from lmbricks.eval.domains import held_out_texts
from lmbricks.eval.perplexity import evaluate_text
from lmbricks.hub import resolve_model

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
DOMAINS = ("zh", "math", "code", "dialogue")
MERGEKIT = ROOT / ".bench-venvs" / "mergekit" / "bin" / "mergekit-extract-lora"


def build_finetune(base: Path, out: Path) -> dict[str, torch.Tensor]:
    """Base + the four shipped bricks' updates, fp32; returns the true deltas per module."""
    reader = CheckpointReader(base)
    tensors = {k: reader.get(k).float() for k in reader}
    deltas: dict[str, torch.Tensor] = {}
    for d in DOMAINS:
        for module, pair in load_factors(ROOT / "bricks" / MODEL / d).items():
            deltas[module] = deltas.get(module, 0) + pair.delta()
    for module, delta in deltas.items():
        tensors[f"{module}.weight"] = tensors[f"{module}.weight"] + delta
    if not out.exists():
        save_state_dict(out, tensors, config=json.loads((base / "config.json").read_text()))
    return deltas


def products(adapter: Path) -> dict[str, torch.Tensor]:
    """``{module: B @ A}`` of a PEFT adapter directory (scale alpha/r = 1 for both tools)."""
    t = load_file(str(adapter / "adapter_model.safetensors"))
    return {
        k.removeprefix("base_model.model.").removesuffix(".lora_A.weight"): t[k.replace("lora_A", "lora_B")].float()
        @ v.float()
        for k, v in t.items()
        if k.endswith(".lora_A.weight")
    }


def bpb(path: Path, adapter: Path | None, texts: dict[str, str]) -> dict[str, float]:
    """Bits per byte per domain of a model directory (plus a PEFT adapter, merged in) in bf16."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model = model.to(torch.bfloat16).eval()
    tok = AutoTokenizer.from_pretrained(resolve_model(MODEL))
    return {d: round(evaluate_text(model, tok, text, seq_len=512).bpb, 5) for d, text in texts.items()}


def main() -> None:
    """Run both extractions at each rank and print the JSON."""
    import lmbricks

    lmbricks.tune_process()  # large buffers stay in the heap, as in every lmbricks process
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--ranks", default="8,16,32")
    ap.add_argument("--bytes", type=int, default=6000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = resolve_model(MODEL)
    texts = held_out_texts(DOMAINS, "test", args.bytes)
    ft = args.out / "finetune"
    deltas = build_finetune(base, ft)
    result: dict = {"model": MODEL, "finetune": "base + shipped bricks zh+math+code+dialogue (weight 1 each)"}
    result["bytes_per_domain"] = args.bytes
    result["bpb"] = {"base": bpb(base, None, texts), "finetune": bpb(ft, None, texts)}
    for r in (int(x) for x in args.ranks.split(",")):
        mk = args.out / f"mergekit-r{r}"
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if not mk.exists():
            cmd = [str(MERGEKIT), "--model", str(ft), "--base-model", str(base), "--out-path", str(mk)]
            subprocess.run([*cmd, "--max-rank", str(r), "-e", "embed_tokens", "-e", "lm_head"], check=True)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        lb = args.out / f"lmbricks-r{r}"
        t0 = time.process_time()
        extract_brick(ft, base, r, lb, force=True)
        lb_cpu = time.process_time() - t0
        row = {}
        for tool, adapter in (("lmbricks", lb), ("mergekit", mk)):
            ba = products(adapter)
            err = [float((deltas[m] - ba[m]).norm() / deltas[m].norm()) for m in deltas]
            row[tool] = {"mean_rel_error": sum(err) / len(err), "max_rel_error": max(err), "modules": len(ba)}
            row[tool]["bpb"] = bpb(base, adapter, texts)
        a, b = products(lb), products(mk)
        row["max_rel_difference_between_tools"] = max(float((a[m] - b[m]).norm() / b[m].norm()) for m in a)
        row["cpu_s"] = {
            "lmbricks": round(lb_cpu, 2),
            "mergekit": round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 2),
        }
        result[f"rank_{r}"] = row
        print(json.dumps({f"rank_{r}": row}), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
