"""Train the shipped LoRA bricks of the default model and measure the domain x brick table.

Reproducible: fixed seeds, fixed data (the corpus domains' train splits), fixed settings below.
Run from the repository root (about 15 minutes per brick on two busy CPU cores)::

    .venv/bin/python scripts/train_bricks.py            # train missing bricks, then the table
    .venv/bin/python scripts/train_bricks.py --table    # only (re)measure the table
    .venv/bin/python scripts/train_bricks.py --force code   # retrain one brick

Outputs, under ``bricks/smollm2-135m-instruct/``: one PEFT adapter directory per domain
(``adapter_config.json``, ``adapter_model.safetensors``, ``lmbricks.json``), ``table.json`` and
``TABLE.md`` (held-out test perplexity, first 12 KB of each domain, base and each brick).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lmbricks.adapters import make_config, read_brick, train_brick
from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.hub import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1] / "bricks" / DEFAULT_MODEL
BRICK_DOMAINS = ("dialogue", "zh", "math", "code")
TABLE_DOMAINS = DEFAULT_DOMAINS
SETTINGS: dict[str, object] = dict(
    rank=8,
    alpha=16.0,
    steps=16,
    batch_size=1,
    seq_len=256,
    lr=3e-3,
    warmup=0.1,
    seed=0,
    eval_bytes=12_000,
    save_dtype="float16",
    precision="fp32",  # the shipped bricks were trained in fp32 (auto would autocast on a bf16 CPU)
)
#: Per-domain changes. Code: the train split's modules are long (up to 229 KB) and 60 steps of
#: 256 tokens read only the first few of the shuffled order: 73% of the tokens came from doctest.py,
#: so the brick learnt one module (24 steps: -1.9%, 60 steps: -2.3%, 60 steps at lr 6e-3: +6.4%).
#: Cutting modules into ~2 KB pieces before shuffling spreads the same 60 steps over ~60 modules:
#: -7.1% on the held-out code.
#: The math train split is ~95% PARI/GP TeX by bytes while its test prefix is CHAMP problems: the
#: two sources get equal bytes and 48 steps (one global shuffle and 16 steps moved the test by
#: -0.1%; balanced, 24 steps: -4.3%; balanced, 48 steps: -9.5%).
OVERRIDES: dict[str, dict[str, object]] = {
    "code": {"steps": 60, "piece_bytes": 2000},
    "math": {"steps": 48, "balance_sources": True},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _step_logger(domain: str, steps: int) -> Callable[[int, float], None]:
    def on_step(step: int, loss: float) -> None:
        if step % 4 == 0 or step == steps:
            log(f"{domain} step {step}/{steps} loss {loss:.4f}")

    return on_step


def train(domains: list[str], force: list[str]) -> None:
    for domain in domains:
        out = ROOT / domain
        if out.exists() and domain not in force:
            log(f"{domain}: exists, skipped")
            continue
        cfg = make_config(**{**SETTINGS, **OVERRIDES.get(domain, {})})
        t0 = time.perf_counter()
        info = train_brick(
            DEFAULT_MODEL,
            out,
            cfg,
            domain=domain,
            name=f"smollm2-{domain}",
            force=True,
            command=f"scripts/train_bricks.py (domain {domain})",
            on_step=_step_logger(domain, cfg.steps),
            on_status=log,
        )
        e = info.effect
        log(
            f"{domain}: ppl {e['ppl_before']:.3f} -> {e['ppl_after']:.3f} ({100 * e['ppl_change']:+.1f}%) "
            f"in {time.perf_counter() - t0:.0f}s"
        )


def table(rows_wanted: list[str]) -> dict[str, dict[str, float]]:
    """Held-out ppl of the base and each brick on every table domain (the diagonal is re-used from
    training). Rows already in ``table.json`` for the same brick content are kept, so the table can
    be measured brick by brick as bricks finish."""
    from peft import PeftModel

    from lmbricks.checkpoint import content_hash
    from lmbricks.eval import evaluate_domains
    from lmbricks.hub import load_hf_model

    path = ROOT / "table.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    rows: dict[str, dict[str, float]] = saved.get("ppl", {})
    hashes: dict[str, str] = saved.get("brick_sha256", {})

    def save() -> None:
        # Merge with rows other runs wrote meanwhile (rows can be measured by parallel runs).
        if path.is_file():
            now = json.loads(path.read_text())
            for name, row in now.get("ppl", {}).items():
                if name not in rows_wanted:
                    rows.setdefault(name, {}).update(row)
            for name, sha in now.get("brick_sha256", {}).items():
                if name not in rows_wanted:
                    hashes[name] = sha
        path.write_text(json.dumps({"domains": list(TABLE_DOMAINS), "ppl": rows, "brick_sha256": hashes}, indent=2))

    model, tok = load_hf_model(DEFAULT_MODEL)
    base = rows.setdefault("base", {})
    for d in BRICK_DOMAINS:
        if (ROOT / d).exists() and d not in base:
            base[d] = read_brick(ROOT / d).effect["ppl_before"]
    missing = [d for d in TABLE_DOMAINS if d not in base]
    if missing:
        log(f"base on {missing}")
        base.update({d: r.ppl for d, r in evaluate_domains(model, tok, missing).items()})
        save()
    peft_model = None
    for d in rows_wanted:
        info = read_brick(ROOT / d)
        sha = content_hash(info.path)
        if hashes.get(d) == sha and set(rows.get(d, {})) == set(TABLE_DOMAINS):
            continue
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, str(info.path), adapter_name=d)
        else:
            peft_model.load_adapter(str(info.path), adapter_name=d)
        peft_model.set_adapter(d)
        peft_model.eval()
        others = [x for x in TABLE_DOMAINS if x != d]
        log(f"brick {d} on {others}")
        rows[d] = {d: info.effect["ppl_after"]}
        rows[d].update({x: r.ppl for x, r in evaluate_domains(peft_model, tok, others).items()})
        hashes[d] = sha
        save()
    return rows


def write_table(rows: dict[str, dict[str, float]]) -> None:
    lines = [
        f"# Shipped bricks of {DEFAULT_MODEL}: held-out perplexity (test split, first 12 KB per domain)",
        "",
        "Rows: the model (base, or base + one brick). Columns: the evaluation domain. In brackets: change",
        "versus the base. Made by `scripts/train_bricks.py` with "
        + ", ".join(f"{k}={v}" for k, v in SETTINGS.items())
        + f"; per-domain overrides: {OVERRIDES}.",
        "",
        "| model | " + " | ".join(TABLE_DOMAINS) + " |",
        "|---|" + "---|" * len(TABLE_DOMAINS),
    ]
    for name in ("base", *BRICK_DOMAINS):
        row = rows[name]
        cells = []
        for d in TABLE_DOMAINS:
            v, b = row[d], rows["base"][d]
            cells.append(f"{v:.3f}" if name == "base" else f"{v:.3f} ({100 * (v / b - 1):+.1f}%)")
        lines.append(f"| {name if name == 'base' else '+' + name} | " + " | ".join(cells) + " |")
    (ROOT / "TABLE.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="only measure the table")
    parser.add_argument("--no-table", action="store_true", help="only train")
    parser.add_argument("--rows", nargs="*", default=None, help="table rows (bricks) to measure (default all)")
    parser.add_argument("--force", nargs="*", default=[], help="retrain these domains")
    parser.add_argument("--domains", nargs="*", default=list(BRICK_DOMAINS))
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared, oversubscribed CPU)"
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if not args.table:
        train(args.domains, args.force)
    if not args.no_table:
        rows = table(args.rows if args.rows is not None else [d for d in BRICK_DOMAINS if (ROOT / d).exists()])
        if all(d in rows for d in BRICK_DOMAINS):
            write_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
