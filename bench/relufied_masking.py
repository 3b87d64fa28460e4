"""Benchmark: the per-token masking curve of the SwiGLU source and of its ReLU-fied model, same text.

For each model, each FFN keeps only the top ``1 - rho`` of its neurons per token by the norm metric
(``|a_i| * ||W_down[:, i]||``, :func:`lmbricks.analysis.masking.mask_topk`; the others are zeroed
before the down projection) and the perplexity per domain is measured on the test split
(:func:`lmbricks.analysis.sparsity.analyze_sparsity`, no CETT). The ReLU-fied model runs with its
FATReLU threshold (``moefy_workers.load_dense``: transformers alone would compute plain relu). fp32.

Prints (and with ``--json`` writes) one JSON object: per model ``mean_change`` (``{rho: mean over
domains of ppl / unmasked ppl - 1}``), ``ppl_change`` per domain, ``base_ppl``, the exact-zero
fraction of the gate activations, the threshold, and the CPU seconds of each model's sweep; without
``--relufied``, the source's curve alone.

Usage:
    OMP_NUM_THREADS=1 python bench/relufied_masking.py --relufied runs/smol-relu --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: its helper modules
from moefy_workers import activation_threshold, load_dense  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="smollm2-135m-instruct", help="the dense SwiGLU model")
    parser.add_argument("--relufied", default=None, help="its ReLU-fied directory (lmbricks sparsify relufy)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    parser.add_argument("--chunks", type=int, default=4, help="test blocks per domain")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per block")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    return parser


def curve(ref: str, sparsities: list[float], chunks: int, seq_len: int) -> dict[str, Any]:
    """One model's masking curve (see the module docstring).

    Args:
        ref: a model reference or directory.
        sparsities: masked fractions rho in (0, 1].
        chunks: test blocks per domain.
        seq_len: tokens per block.

    Returns:
        ``{"threshold", "exact_zero_fraction", "base_ppl", "mean_change", "ppl_change", "cpu_s"}``.
    """
    from lmbricks.analysis import find_ffns
    from lmbricks.analysis.hooks import tap_activations
    from lmbricks.analysis.sparsity import SparsityConfig, analyze_sparsity, masking_changes

    cpu = time.process_time()
    model, tokenizer = load_dense(ref)
    cfg = SparsityConfig(
        sparsities=(0.0, *sparsities), metrics=("norm",), cett_target=None, n_chunks=chunks, seq_len=seq_len
    )
    result = analyze_sparsity(model, tokenizer, cfg, on_step=lambda m: print(f"  {ref}: {m}", file=sys.stderr))
    zeros = [0, 0]

    def count(_layer: int, a: torch.Tensor) -> None:
        # a = act(gate) * up: exactly zero where the gate activation is (up is never exactly 0 here)
        zeros[0] += int((a == 0).sum())
        zeros[1] += a.numel()

    from lmbricks.analysis.corpus import domain_chunks

    blocks = domain_chunks(tokenizer, cfg.domains, "test", 1, seq_len)
    with torch.no_grad(), tap_activations(find_ffns(model), count):
        for ids in blocks.values():
            model(input_ids=ids)
    changes = masking_changes(result, "norm")
    return {
        "threshold": activation_threshold(ref),
        "exact_zero_fraction": zeros[0] / max(zeros[1], 1),
        "base_ppl": result.base_ppl,
        "mean_change": {r: v for r, v in changes["mean_change"].items() if r != "0"},
        "ppl_change": {r: v for r, v in changes["ppl_change"].items() if r != "0"},
        "cpu_s": round(time.process_time() - cpu, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import lmbricks

    lmbricks.tune_process()
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {
        "what": "per-token masking curve (norm metric, test split) of the SwiGLU source and its ReLU-fied model",
        "command": "python bench/relufied_masking.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "eval": {"chunks_per_domain": args.chunks, "seq_len": args.seq_len, "split": "test", "precision": "fp32"},
        "clock": "process CPU time (cpu_s)",
        "threads": args.threads,
    }
    out["source"] = curve(args.source, args.sparsities, args.chunks, args.seq_len)
    if args.relufied is not None:  # without it (make bench): the source's curve alone
        out["relufied"] = curve(args.relufied, args.sparsities, args.chunks, args.seq_len)
        out["relufied_vs_source_unmasked"] = sum(
            out["relufied"]["base_ppl"][d] / out["source"]["base_ppl"][d] - 1.0 for d in out["source"]["base_ppl"]
        ) / len(out["source"]["base_ppl"])
    text = json.dumps(out, indent=1)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)
    return out


if __name__ == "__main__":
    main()
