"""bf16 against fp32 patching of the zoo pair, on the demo run's flagged prompts.

The same CMAP run (resid_post of every layer, the demo evaluation's token limit) in float32 and
in bfloat16; it prints:

- token agreement: the share of the fp32 run's patched tokens that the bf16 run reproduces,
  position by position per trajectory (after a first difference the contexts differ, and the
  rest of that trajectory counts as it falls);
- CTS agreement: on the steps both runs reach with the same context (before their trajectory's
  first differing token) where CTS is defined in fp32 and not a near-tie
  (|dl_corrupt - dl_clean| >= `--tie` logits), the share whose bf16 CTS is within `--cts-tol`;
- the dtypes' times.

    make demo   # once: the prompts are results/demo/eval/flagged.parquet
    .venv/bin/python bench/precision.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def run(dtype: str, prompts: list[list[int]], tokens: int, eos: list[int]):
    from harness.zoo import load_built, zoo_dir
    from patchers import load_pair, run_cmap

    built = load_built(zoo_dir())
    pair = load_pair(built.clean, built.corrupt, dtype=dtype)
    start = time.perf_counter()
    result = run_cmap(pair, prompts, max_new_tokens=tokens, eos_token_ids=eos)
    return result.steps, time.perf_counter() - start


def compare(fp32, bf16, tie: float, tolerance: float) -> dict:
    import polars as pl

    keys = ["prompt_id", "layer", "step"]
    joined = fp32.join(bf16, on=keys, how="left", suffix="_bf16").sort(keys)
    same = joined["token_id"] == joined["token_id_bf16"]
    tokens = float(same.fill_null(False).mean())
    # Steps before each trajectory's first differing token share their context in both runs.
    joined = joined.with_columns(
        (~same.fill_null(False)).cast(pl.Int32).alias("differs")
    ).with_columns(
        (pl.col("differs").cum_sum().over("prompt_id", "layer") - pl.col("differs")).alias("before")
    )
    shared = joined.filter(pl.col("before") == 0)
    scored = shared.filter(
        pl.col("cts").is_not_null() & ((pl.col("dl_corrupt") - pl.col("dl_clean")).abs() >= tie)
    )
    close = (scored["cts"] - scored["cts_bf16"]).abs() <= tolerance
    return {
        "token_agreement": round(tokens, 4),
        "steps_fp32": fp32.height,
        "cts_agreement": round(float(close.fill_null(False).mean()), 4) if scored.height else None,
        "cts_steps_compared": scored.height,
        "cts_defined_steps_shared_context": int(shared["cts"].is_not_null().sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 prompts instead of 32")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tie", type=float, default=1.0, help="near-tie: |dl_corrupt-dl_clean|")
    parser.add_argument("--cts-tol", type=float, default=0.1)
    args = parser.parse_args()

    import polars as pl
    import torch
    from transformers import AutoTokenizer

    from harness.config import load_config
    from harness.zoo import load_built, zoo_dir

    torch.set_num_threads(1)
    flagged = ROOT / "results" / "demo" / "eval" / "flagged.parquet"
    built = load_built(zoo_dir())
    if built is None or not flagged.is_file():  # a fresh clone: nothing to compare yet
        print(json.dumps({"skipped": f"needs the zoo and {flagged}: run `make demo` first"}))
        return
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    tokenizer = AutoTokenizer.from_pretrained(built.clean)
    questions = pl.read_parquet(flagged)["question"].unique(maintain_order=True).to_list()
    count = 8 if args.quick else args.prompts
    prompts = [cfg.prompt.encode(tokenizer, q) for q in questions[:count]]
    eos = [tokenizer.eos_token_id]
    tokens = cfg.eval.max_new_tokens
    fp32, fp32_seconds = run("float32", prompts, tokens, eos)
    bf16, bf16_seconds = run("bfloat16", prompts, tokens, eos)
    report = {
        **compare(fp32, bf16, args.tie, args.cts_tol),
        "prompts": len(prompts),
        "max_new_tokens": tokens,
        "site": "resid_post",
        "near_tie_below": args.tie,
        "cts_tolerance": args.cts_tol,
        "seconds": {"float32": round(fp32_seconds, 2), "bfloat16": round(bf16_seconds, 2)},
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
