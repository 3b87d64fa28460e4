"""The tour's masking curve on the default model with fp32 and with bf16 weights, side by side.

Usage: ``python scripts/analysis_precision.py [--seq-len 512] [--threads 1]``; prints JSON with, per
dtype, the unmasked perplexity by domain, the mean perplexity change at each masked fraction (norm
metric, one block per domain) and the process CPU time of the analysis. docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lmbricks.analysis import SparsityConfig, analyze_sparsity
from lmbricks.analysis.sparsity import masking_changes
from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.hub import load_hf_model
from lmbricks.runtime import tune_process

RHOS = (0.0, 0.5, 0.7, 0.8, 0.9)


def main() -> None:
    """Run the curve once per dtype and print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    tune_process()
    torch.set_num_threads(args.threads)
    cfg = SparsityConfig(DEFAULT_DOMAINS, RHOS, ("norm",), None, n_chunks=1, seq_len=args.seq_len, batch_size=5)
    out: dict[str, dict[str, object]] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model, tokenizer = load_hf_model("smollm2-135m-instruct", dtype=dtype)
        start = time.process_time()
        result = analyze_sparsity(model, tokenizer, cfg)
        out[name] = {"cpu_s": round(time.process_time() - start, 1), "base_ppl": result.base_ppl}
        out[name].update(masking_changes(result))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
