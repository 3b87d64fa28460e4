"""Benchmark: ``lmbricks adapters extract`` against ``mergekit-extract-lora`` (0.1.5) on the default model.

The fine-tune is a real fine-tune delta: SmolLM2-135M-Instruct plus the four shipped bricks
(``bricks/smollm2-135m-instruct/{zh,math,code,dialogue}``, each at weight 1) merged into its weights,
saved in fp32; its delta has rank <= 32 per module. Both tools extract it at each rank (the seven
projection targets; embeddings are unchanged, so mergekit runs with ``-e embed_tokens -e lm_head``).
Per tool and rank: the relative Frobenius reconstruction error per module (mean, max), the largest
relative difference between the two tools' ``B @ A``, and the bits per byte of base + adapter (loaded
through PEFT) on the held-out text of each domain, next to the base and the fine-tune themselves.

The bits-per-byte gap between the tools (up to 0.0017 at rank 8 in bf16) is explained per rank by
comparing the two merged models weight by weight (``merged``: the largest relative difference of an
fp32 weight, and how many weights round to a different bf16 value) and by evaluating each adapter
again in fp32 (``bpb_fp32``): the factors agree to fp32 rounding, a few hundred of ~163M weights land
on the other side of a bf16 rounding boundary, and the bf16 forward pass amplifies that into the
gap, which the fp32 evaluation does not show.

Usage: OMP_NUM_THREADS=1 python bench/extract_parity.py OUT_DIR [--ranks 8,16,32] [--bytes 6000] [--no-fp32]
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


def merged_model(path: Path, adapter: Path | None) -> torch.nn.Module:
    """A model directory in fp32 with a PEFT adapter merged in (``merge_and_unload``), or alone."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.eval()


def bpb(
    path: Path, adapter: Path | None, texts: dict[str, str], dtype: torch.dtype = torch.bfloat16
) -> dict[str, float]:
    """Bits per byte per domain of a model directory (plus a PEFT adapter, merged in fp32), run in ``dtype``."""
    from transformers import AutoTokenizer

    model = merged_model(path, adapter).to(dtype)
    tok = AutoTokenizer.from_pretrained(resolve_model(MODEL))
    return {d: round(evaluate_text(model, tok, text, seq_len=512).bpb, 5) for d, text in texts.items()}


def merged_differences(base: Path, a: Path, b: Path) -> dict[str, float | int]:
    """How far base + adapter ``a`` and base + adapter ``b`` (merged in fp32) are apart, weight by weight.

    Returns:
        ``fp32_max_rel``: the largest ``|wa - wb| / max |wb|`` of a module; ``bf16_differing``: weights
        whose bf16 roundings differ (``bf16_total`` weights); ``bf16_modules``: modules with any.
    """
    sa = {k: v.detach().clone() for k, v in merged_model(base, a).state_dict().items()}
    sb = merged_model(base, b).state_dict()
    rel, differing, modules, total = 0.0, 0, 0, 0
    for k, wa in sa.items():
        wb = sb[k].detach()
        rel = max(rel, float((wa - wb).abs().max()) / max(float(wb.abs().max()), 1e-30))
        n = int((wa.bfloat16() != wb.bfloat16()).sum())
        differing, modules, total = differing + n, modules + (n > 0), total + wa.numel()
    return {"fp32_max_rel": rel, "bf16_differing": differing, "bf16_total": total, "bf16_modules": modules}


def main() -> None:
    """Run both extractions at each rank and print the JSON."""
    import lmbricks

    lmbricks.tune_process()  # large buffers stay in the heap, as in every lmbricks process
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--ranks", default="8,16,32")
    ap.add_argument("--bytes", type=int, default=6000)
    ap.add_argument("--no-fp32", action="store_true", help="skip the fp32 evaluation and the merged comparison")
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
            if not args.no_fp32:
                row[tool]["bpb_fp32"] = bpb(base, adapter, texts, torch.float32)
        a, b = products(lb), products(mk)
        row["max_rel_difference_between_tools"] = max(float((a[m] - b[m]).norm() / b[m].norm()) for m in a)
        if not args.no_fp32:
            row["merged"] = merged_differences(base, lb, mk)
            for key in ("bpb", "bpb_fp32"):
                gaps = [abs(row["lmbricks"][key][d] - row["mergekit"][key][d]) for d in DOMAINS]
                row[f"max_{key}_gap"] = round(max(gaps), 5)
        row["cpu_s"] = {
            "lmbricks": round(lb_cpu, 2),
            "mergekit": round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 2),
        }
        result[f"rank_{r}"] = row
        print(json.dumps({f"rank_{r}": row}), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
