"""The tokenizer-transplant experiment of docs/tokenizers.md: bits per byte per domain before and after.

Transplants the donor's tokenizer into the model with each method (omp, mean, zero), then scores
the model, each transplant and (with ``--score-donor``) the donor model on the same held-out bytes
of each domain. Bits per byte divide the text's total negative log-likelihood by its UTF-8 bytes,
so models with different tokenizers are compared on the same text. Prints JSON (and writes it
with ``--out``). Windows are scored one at a time: a 152k-token vocabulary's log-softmax over a
batch of four 1,024-token windows would take 2.5 GB.

Run from the repository root (one thread; the donor is fetched into the cache first)::

    lmbricks models fetch qwen2.5-coder-0.5b-instruct
    OMP_NUM_THREADS=1 python scripts/tokens_experiment.py --bytes 6000 --out runs/tokens/qwen.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Progress:
    """A transplant's ``progress(stage, n)`` callback that logs each stage and every tenth of its items."""

    def __init__(self) -> None:
        self.total = self.done = self.next = 0

    def __call__(self, stage: str, n: int | None) -> None:
        n = n or 0  # the pipeline's type allows None (a stage of unknown size)
        if stage:
            self.total, self.done, self.next = n, 0, max(n // 10, 1)
            log(f"  {stage}")
            return
        self.done += n
        if self.done >= self.next:
            log(f"    {self.done}/{self.total}")
            self.next += max(self.total // 10, 1)


def score(ref: str | Path, texts: dict[str, str]) -> dict[str, dict[str, float]]:
    """Bits per byte (and tokens, bytes) of one model on each text, bf16 weights, one window per pass."""
    import torch

    from lmbricks.eval.perplexity import evaluate_text
    from lmbricks.hub import load_hf_model

    model, tokenizer = load_hf_model(ref, dtype=torch.bfloat16)
    out = {}
    for domain, text in texts.items():
        r = evaluate_text(model, tokenizer, text, batch_size=1)
        out[domain] = {"bpb": round(r.bpb, 4), "tokens": r.tokens, "bytes": r.bytes}
        log(f"  {ref}: {domain} {r.bpb:.4f} bits/byte over {r.tokens} tokens")
    del model
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--donor", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--methods", nargs="+", default=["omp", "mean", "zero"])
    parser.add_argument("--k", type=int, default=64, help="anchors per new token for omp")
    parser.add_argument("--bytes", type=int, default=6000, help="held-out bytes per domain (test split)")
    parser.add_argument("--domains", nargs="+", default=None, help="default: the five main domains")
    parser.add_argument("--runs", type=Path, default=Path("runs/tokens"), help="where the transplants are written")
    parser.add_argument("--score-donor", action="store_true", help="also score the donor model itself")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from lmbricks.eval import DEFAULT_DOMAINS, held_out_texts
    from lmbricks.tokens import TransplantConfig, transplant

    torch.set_num_threads(1)
    texts = held_out_texts(args.domains or list(DEFAULT_DOMAINS), "test", args.bytes)
    result: dict[str, Any] = {"model": args.model, "donor": args.donor, "bytes": args.bytes, "k": args.k}
    result["transplants"] = {}
    paths: dict[str, Path] = {}
    for method in args.methods:
        out = paths[method] = args.runs / f"{Path(args.model).name}--{Path(args.donor).name}--{method}"
        if not (out / "lmbricks.json").is_file():
            log(f"transplant {method} -> {out}")
            cpu0 = time.process_time()
            r = transplant(args.model, args.donor, out, TransplantConfig(method=method, k=args.k), progress=Progress())
            stats: dict[str, float] = {
                "rows": r.rows,
                "copied": r.copied,
                "new": r.new,
                "padding": r.padding,
                "anchors": r.anchors,
            }
            stats |= {"wall_s": round(r.seconds, 1), "cpu_s": round(time.process_time() - cpu0, 1)}
            result["transplants"][method] = stats
            log(f"  {stats}")
        result["transplants"].setdefault(method, {})["output"] = out.name  # a name: records carry no machine paths
    result["bpb"] = {"model": score(args.model, texts)}
    for method in args.methods:
        result["bpb"][method] = score(paths[method], texts)
    if args.score_donor:
        result["bpb"]["donor"] = score(args.donor, texts)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
