"""K LoRA adapters of one base: one engine for all of them against K separate runs, one run.

Ours: ``run_eval`` with the clean base and the K adapters, served as LoRA modules of one
in-process vLLM engine, every model's prompts batched together (``harness.inprocess``, with
``harness.vllm_cpu``'s grouped LoRA ops on CPU), the clean model evaluated too (work the
baseline does not do). Baseline: what lm-eval does, one run
per adapter, each a process of its own starting its own engine with the base and that one
adapter and evaluating it alone (lm-eval's vLLM backend serves one LoRA per run). Each side is
timed from the start of its fresh Python process (imports included, as a user's command pays
them) to its tables. Same suite, items and greedy settings; prints the wall-clock ratio (goal
on 2 CPU cores: >= 2x), each side's seconds and engine start-ups, and the share of each
adapter's answers that are the same on both sides (in bf16 a batch of another size rounds
differently and a random model's near-tied greedy tokens may flip; fp32 gives 1.0).

    python bench/adapters.py --quick --json   # K = 4, 64 related items x 64 tokens
    python bench/adapters.py --quick --same-process   # both sides in this process: engines only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def random_adapter(base: Path, path: Path, seed: int) -> Path:
    """A LoRA adapter on ``base`` with random, non-zero weights (its answers differ)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.config import LoraConfig as Recipe

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    targets = list(Recipe().target_modules)  # the fine-tuning recipe's
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    peft_model.peft_config["default"].base_model_name_or_path = str(base.resolve())
    peft_model.save_pretrained(path)
    return path


def one_engine(cfg, models: dict[str, str], out: Path):
    """Ours: every model on one engine (``run_eval``); its records and engine start-up."""
    from harness.evaluate import run_eval

    run = run_eval(cfg, models, engine="vllm", out_dir=out)
    return run.records, run.seconds.get("startup", 0.0)


def separate_run(cfg, base: Path, name: str, adapter: Path, out: Path):
    """One adapter as lm-eval runs it: its own engine (base + this adapter), itself alone."""
    from harness.endpoints import resolve_models
    from harness.evaluate import evaluate_model, fingerprint, model_factories, serving_mode
    from harness.lm_tasks import plan_eval

    entries = resolve_models({"clean": str(base), name: str(adapter)})
    seconds: dict[str, float] = {}
    with model_factories(entries, cfg, "vllm", out, None, seconds) as factories:
        lm = factories[name]()
        entry = entries[1]
        key = fingerprint(entry, "vllm", cfg, serving_mode(entry, entries, "vllm", None))
        records = evaluate_model(lm, name, "vllm", cfg, out / "cache" / f"{name}-{key}",
                                 plan_eval(cfg.eval))  # fmt: skip
    return records, seconds.get("startup", 0.0)


def fresh_process(fn, *args):
    """(seconds, result) of ``fn(*args)`` in a new Python process, its start included."""
    import multiprocessing as mp

    start = time.perf_counter()
    with mp.get_context("spawn").Pool(1) as pool:
        result = pool.apply(fn, args)
    return time.perf_counter() - start, result


def this_process(fn, *args):
    """(seconds, result) of ``fn(*args)`` here: imports already paid, engines only."""
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 items x 64 tokens")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--docs", type=int, help="items per related task")
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--same-process", action="store_true", help="both sides here: no interpreter starts"
    )
    args = parser.parse_args(argv)
    timed = this_process if args.same_process else fresh_process
    docs = args.docs or (32 if args.quick else 64)
    tokens = args.tokens or (64 if args.quick else 96)

    from eval import build_model, config

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    work = Path(tempfile.mkdtemp(prefix="bench-adapters-"))
    base = build_model(work / "base", 512, 6)
    adapters = {f"a{k}": random_adapter(base, work / f"a{k}", seed=k + 1)
                for k in range(args.adapters)}  # fmt: skip
    cfg = config(work, base, docs, tokens, args.dtype)

    models = {"clean": str(base)} | {n: str(p) for n, p in adapters.items()}
    ours_seconds, (ours, ours_startup) = timed(one_engine, cfg, models, work / "ours")
    separate, startups, same = {}, {}, {}
    for name, path in adapters.items():
        seconds, (records, startup) = timed(
            separate_run, cfg, base, name, path, work / f"separate-{name}"
        )
        separate[name], startups[name] = seconds, startup
        mine = ours.filter(ours["model"] == name).sort("task", "doc_id")
        theirs = records.sort("task", "doc_id")
        pairs = zip(mine["response"], theirs["response"], strict=True)
        same[name] = round(sum(a == b for a, b in pairs) / theirs.height, 3)
    result = {
        "one_engine_vs_separate": round(sum(separate.values()) / ours_seconds, 3),
        "one_engine_s": round(ours_seconds, 2),
        "one_engine_startup_s": round(ours_startup, 2),
        "separate_s": round(sum(separate.values()), 2),
        "separate_each_s": {n: round(s, 2) for n, s in separate.items()},
        "separate_startup_s": {n: round(s, 2) for n, s in startups.items()},
        "answers_identical_share": same,
        "adapters": args.adapters,
        "models_on_one_engine": args.adapters + 1,
        "items_per_model": int((ours["model"] == "clean").sum()),
        "max_new_tokens": tokens,
        "dtype": args.dtype,
        "processes": "one per side and run" if not args.same_process else "this one",
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return result


if __name__ == "__main__":
    main()
