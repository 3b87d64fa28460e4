"""The proxy-tuning experiment of docs/proxy-tuning.md: steer a large model with a small model's brick.

M1 = the large model, M2 = the small model, M3 = M2 plus a LoRA brick trained on one domain.
Measures held-out perplexity of M1, M2, M3 and the proxy ``M1 + alpha (M3 - M2)`` for several
alphas on the domain's test split, the fraction of the M1-to-M3 gap the proxy closes, and a few
greedy generations side by side. Prints JSON (and writes it with ``--out``).

Run from the repository root (the Qwen pair is optional and large; fetch it first)::

    lmbricks models fetch qwen2.5-coder-0.5b-instruct && lmbricks models fetch qwen2.5-coder-1.5b-instruct
    python scripts/proxy_experiment.py --domain zh --train-steps 48 --out runs/proxy-qwen.json

    # the mechanism on the default model alone (M1 = M2; alpha 1 then equals the brick):
    python scripts/proxy_experiment.py --base smollm2-135m-instruct --small smollm2-135m-instruct --brick code
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PROMPTS = {
    "code": ["def fibonacci(n):", "import os\n\n\ndef list_python_files(path):", "class LRUCache:"],
    "zh": ["Debian 是一个", "如何在 Debian 上安装软件包？", "系统管理员应该"],
    "dialogue": ["Hello, how are you?", "What is your favorite book?", "Do you like music?"],
    "math": ["Let $n$ be a positive integer such that", "Prove that for all real x,", "Find all primes p"],
    "en_prose": ["It was a truth universally", "Mrs. Bennet said to her husband", "The morning was fine and"],
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="qwen2.5-coder-1.5b-instruct", help="M1, the model steered")
    parser.add_argument("--small", default="qwen2.5-coder-0.5b-instruct", help="M2, the small model")
    parser.add_argument("--brick", default=None, help="M3 = M2 + this brick (directory or catalogue name)")
    parser.add_argument("--domain", default=None, help="held-out domain (default: the brick's)")
    parser.add_argument("--train-steps", type=int, default=48, help="train a brick on --domain when --brick is absent")
    parser.add_argument("--lr", type=float, default=5e-4, help="that brick's learning rate (3e-3 wrecked the 0.5B)")
    parser.add_argument("--eval-bytes", type=int, default=6000, help="held-out bytes scored")
    parser.add_argument("--alphas", default="0,0.5,1,1.5,2")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from lmbricks.adapters import make_config, read_brick, train_brick
    from lmbricks.data import domain_text
    from lmbricks.proxy import DecodeConfig, proxy_generate, proxy_perplexity
    from lmbricks.proxy.load import load_member

    torch.set_num_threads(args.threads)
    brick = args.brick
    if brick is None:
        if args.domain is None:
            parser.error("give --brick, or --domain to train one")
        out = Path("runs") / f"proxy-brick-{Path(args.small).name}-{args.domain}-lr{args.lr:g}"
        if not out.exists():
            steps = f"{args.train_steps} steps, lr {args.lr:g}"
            log(f"training a brick of {args.small} on {args.domain} ({steps}) -> {out}")
            train_cfg = make_config(steps=args.train_steps, lr=args.lr, piece_bytes=2000, balance_sources=True)
            train_brick(args.small, out, train_cfg, domain=args.domain, on_status=log)
        brick = str(out)
    log("loading M1, M2 and M3")
    m1 = load_member(args.base)
    m2 = m1 if args.small == args.base else load_member(args.small)
    m3 = load_member(args.small, brick=brick)
    from lmbricks.adapters.catalogue import find_brick

    info = read_brick(find_brick(brick, args.small))
    domain = args.domain or info.domain or "code"
    alphas = [float(a) for a in args.alphas.split(",")]
    log(f"scoring {args.eval_bytes} bytes of {domain} (test split)")
    t0 = time.perf_counter()
    scores = proxy_perplexity(m1, m3, m2, domain_text(domain, "test", args.eval_bytes), alphas=alphas)
    t_score = time.perf_counter() - t0
    prompts = PROMPTS.get(domain, PROMPTS["code"])
    cfg = DecodeConfig(max_new_tokens=args.new_tokens)
    log("decoding")
    gens = {
        "M1": proxy_generate(m1, prompts, cfg).texts,
        "M3": proxy_generate(m3, prompts, cfg).texts,
        "proxy (alpha 1)": proxy_generate(m1, prompts, cfg, expert=m3, anti=m2).texts,
    }
    result = {
        "base": args.base,
        "small": args.small,
        "brick": str(info.path),
        "brick_effect": info.effect,
        "domain": domain,
        "tokens_scored": scores.tokens,
        "ppl": {"M1": scores.base, "M2": scores.anti, "M3": scores.expert, "proxy": scores.proxy},
        "gap_closed": {str(a): scores.gap_closed(a) for a in alphas},
        "score_seconds": t_score,
        "generations": [{"prompt": p, **{k: v[i] for k, v in gens.items()}} for i, p in enumerate(prompts)],
    }
    text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
