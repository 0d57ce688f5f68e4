"""Benchmark of the CMAP patcher, measured side by side in one run.

Rows: random models of three shapes (8 layers, hidden 512, float32): Qwen3 (q/k norms, GQA),
Gemma 2 (sandwich norms, softcapping, sliding windows of 64 tokens) and GPT-2 (learned positions,
Conv1D); and the zoo pair (the demo's clean model and its corrupting LoRA adapter) on the flagged
prompts of a demo run. For each random row, patching resid_post of every layer for 4 prompts
(32 trajectories, about one prompt's worth on Qwen3-4B's 36 layers) while generating 128 tokens,
it times:

  (a) naive: the reference (`patchers.reference`: the paper's loop, per trajectory, per token,
      three full forwards of the whole sequence without a cache), with a full corrupted model;
  (b) ours: `patchers.run_cmap`, once with a full corrupted model and once with a LoRA adapter
      (one forward of the PeftModel for all rows);
  (c) floor: a plain KV-cached greedy decoding loop (model forward + DynamicCache + argmax, no
      `generate()`) of the clean model alone over the same number of trajectories;

and prints speedup_vs_naive = a/b and ratio_to_floor = b/c (full corrupted model; the adapter's
figures beside them; ratio_to_floor_engine_cache: b over the floor decoding with the engine's
growing cache, `patchers.cache`, instead of `DynamicCache`, the part of the ratio that is not the
cache), the token agreement of (b) with (a), each measurement's peak resident
memory, and the rows that sharing contexts saved: trajectories whose tokens are still
identical share one clean and one corrupted row (`CmapResult.rows`). The zoo row times (b) with
the adapter and (c) on the demo's flagged prompts, as many new tokens as the demo's evaluation.
Each measurement runs in its own process (so peak memory is its own) with one torch thread (on
a shared 2-core machine two threads swing timings by 10x); (b) and (c) run in `--repeats`
interleaved rounds and keep their best, since other work only ever adds time. The naive loop
costs the same for every trajectory (one at a time, same lengths, no eos); with `--quick` it
runs `--naive-trajectories` of them (the last layer's first, where the patch changes most) and
its time is scaled to all of them, which the JSON says.

    make demo   # once: the zoo row reads results/demo/eval/flagged.parquet
    .venv/bin/python bench/cmap.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "patchers")]

SIZE = dict(
    vocab_size=8192,
    hidden_size=512,
    intermediate_size=1536,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=64,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
    initializer_range=0.1,  # peaked logits, as in a trained model: argmaxes are not near-ties
)
SHAPES = {
    "qwen3": ("Qwen3Config", SIZE),
    "gemma2": ("Gemma2Config", {**SIZE, "sliding_window": 64, "query_pre_attn_scalar": 64}),
    "gpt2": (
        "GPT2Config",
        {
            "vocab_size": 8192,
            "n_embd": 512,
            "n_inner": 1536,
            "n_head": 8,
            "n_positions": 1024,
            "initializer_range": 0.1,
        },
    ),
}
ZOO_RUN = ROOT / "results" / "demo"


def random_config(args):
    import transformers

    name, sizes = SHAPES[args.shape]
    layers = {"n_layer" if args.shape == "gpt2" else "num_hidden_layers": args.layers}
    special = dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id"))
    return getattr(transformers, name)(**sizes, **layers, **special)


def build(args, kind: str):
    """(clean, corrupted side) for kind 'full' or 'adapter'; deterministic."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if args.shape == "zoo":
        from patchers.models import load_pair

        if kind == "plain":  # the floor: the clean model alone, without peft's wrappers
            return AutoModelForCausalLM.from_pretrained(zoo_dirs()[0]).eval(), None
        pair = load_pair(*zoo_dirs())
        return pair.clean, pair.corrupt
    torch.manual_seed(0)
    clean = AutoModelForCausalLM.from_config(random_config(args), dtype=torch.float32).eval()
    if kind == "full":
        from tiny_models import perturbed

        return clean, perturbed(clean, scale=0.05)
    lora = LoraConfig(
        r=16, lora_alpha=32, target_modules="all-linear", fan_in_fan_out=args.shape == "gpt2"
    )
    peft_model = get_peft_model(clean, lora)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    return clean, peft_model.eval()


def zoo_dirs() -> tuple[str, str]:
    from harness.zoo import find_built

    built = find_built()
    return str(built.clean), str(built.corrupt)


def zoo_missing() -> str | None:
    """Why the zoo row cannot run (checked before its workers start), or None."""
    from harness.zoo import find_built

    if find_built() is None or not (ZOO_RUN / "eval" / "flagged.parquet").is_file():
        return f"needs the zoo and {ZOO_RUN / 'eval' / 'flagged.parquet'}: run `make demo` first"
    return None


def prompts(args) -> list[list[int]]:
    if args.shape == "zoo":
        return zoo_prompts(args)
    import torch

    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(0, SIZE["vocab_size"], (args.prompts, args.prompt_len), generator=generator)
    return ids.tolist()


def zoo_prompts(args) -> list[list[int]]:
    """The first `--zoo-prompts` flagged items of the demo run, as the evaluation sent them."""
    import polars as pl
    from transformers import AutoTokenizer

    from harness.config import load_config

    flagged = ZOO_RUN / "eval" / "flagged.parquet"
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    questions = pl.read_parquet(flagged)["question"].unique(maintain_order=True).to_list()
    tokenizer = AutoTokenizer.from_pretrained(zoo_dirs()[0])
    return [cfg.prompt.encode(tokenizer, q) for q in questions[: args.zoo_prompts]]


def zoo_tokens() -> int:
    from harness.config import load_config

    return load_config(ROOT / "configs" / "demo.yaml").eval.max_new_tokens


def ours_runner(args, kind: str):
    """A function that runs the patcher once: (seconds, tokens per trajectory, rows)."""
    from patchers.cmap import run_cmap
    from patchers.models import ModelPair

    pair = ModelPair(*build(args, kind))
    eos = [pair.clean.config.eos_token_id] if args.shape == "zoo" else []

    def run() -> tuple[float, list, dict]:
        start = time.perf_counter()
        result = run_cmap(pair, prompts(args), max_new_tokens=args.tokens, eos_token_ids=eos)
        seconds = time.perf_counter() - start
        tokens = result.generations.select("prompt_id", "layer", "token_ids").rows()
        return seconds, tokens, result.rows

    return run


def floor_runner(args, engine_cache: bool = False):
    """A function that runs the floor once: greedy KV-cached decoding, clean model alone, of
    as many trajectories (as many tokens each as ours generated, on the zoo row). The plain
    floor uses transformers' `DynamicCache`; with `engine_cache` it decodes with the engine's
    own cache (`patchers.cache`), to show how much of the ratio is the cache."""
    import torch
    from transformers import DynamicCache

    from patchers.cache import engine_cache as growing
    from patchers.models import bare

    clean, _ = build(args, "plain" if args.shape == "zoo" else "full")
    n_layers = clean.config.num_hidden_layers
    rows = [p for _ in range(n_layers) for p in prompts(args)]

    @torch.inference_mode()
    def run(lengths: list[int] | None = None) -> tuple[float, None, dict]:
        width = max(map(len, rows))
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        remaining = torch.tensor(lengths or [args.tokens] * len(rows))
        start = time.perf_counter()
        cache = growing(clean.config) if engine_cache else DynamicCache(config=clean.config)
        with bare(clean):
            out = clean(
                input_ids=ids,
                attention_mask=mask,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            token = out.logits[:, -1].argmax(-1)
            for step in range(1, int(remaining.max())):
                keep = remaining > step  # the rows that still generate a token
                if not keep.all():  # as ours' trajectories ended (at eos, on the zoo row)
                    index = keep.nonzero()[:, 0]
                    out.past_key_values.batch_select_indices(index)
                    token, mask, remaining = token[index], mask[index], remaining[index]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                out = clean(
                    input_ids=token[:, None],
                    attention_mask=mask,
                    past_key_values=out.past_key_values,
                    use_cache=True,
                    logits_to_keep=1,
                )
                token = out.logits[:, -1].argmax(-1)
        return time.perf_counter() - start, None, {}

    return run


def naive_runner(args, trajectories: list[tuple[int, int]]):
    """A function that runs the naive reference once on the given (prompt, layer) pairs."""
    from patchers.reference import full_model_side, reference_cmap

    clean, corrupt = build(args, "full")
    sides = full_model_side(clean), full_model_side(corrupt)
    all_prompts = prompts(args)

    def run() -> tuple[float, list, dict]:
        tokens = []
        start = time.perf_counter()
        for prompt_id, layer in trajectories:
            steps = reference_cmap(
                *sides, all_prompts[prompt_id], "resid_post", layer, None, args.tokens
            )
            tokens.append((prompt_id, layer, [s["token_id"] for s in steps]))
        return time.perf_counter() - start, tokens, {}

    return run


def _worker(name: str, args, extra, commands, results) -> None:
    """Build once, then run on each command; at the end report this process's peak memory."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    runner = {"floor": floor_runner, "ours": ours_runner, "naive": naive_runner}[name]
    run = runner(args, *extra)
    while (command := commands.get())[0] == "run":
        results.put(run(*command[1:]))
    results.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


class Worker:
    """One measurement in its own process (so its peak memory is its own)."""

    def __init__(self, name: str, args, *extra):
        context = mp.get_context("spawn")
        self.commands, self.results = context.Queue(), context.Queue()
        self.process = context.Process(
            target=_worker, args=(name, args, extra, self.commands, self.results)
        )
        self.process.start()
        self.best, self.tokens, self.rows = float("inf"), None, {}

    def run(self, *payload) -> None:
        self.commands.put(("run", *payload))
        seconds, self.tokens, self.rows = self.results.get()
        self.best = min(self.best, seconds)

    def stop(self) -> float:
        """Peak resident memory in MB."""
        self.commands.put(("stop",))
        peak = self.results.get()
        self.process.join()
        return peak


def agreement(ours: list, naive: list) -> float:
    """Fraction of the naive run's tokens that ours reproduces, position by position."""
    mine = {(p, layer): t for p, layer, t in ours}
    same = total = 0
    for prompt_id, layer, tokens in naive:
        other = mine[(prompt_id, layer)]
        total += max(len(tokens), len(other))
        same += sum(a == b for a, b in zip(tokens, other, strict=False))
    return same / total


def saved(rows: dict[str, int], models: int = 2) -> dict[str, object]:
    """Rows sharing contexts saved: each model ran one row per context instead of one per
    trajectory."""
    patched, context = rows["patched"], rows["context"]
    return {
        "trajectory_steps": patched,
        "context_rows": context,
        "rows_saved": models * (patched - context),
        "fraction_saved": round(models * (patched - context) / (3 * patched), 3),
    }


def random_row(args) -> dict:
    """Naive, ours (full and adapter) and the floor on one random-model shape."""
    everything = [(p, layer) for layer in range(args.layers) for p in range(args.prompts)]
    # With --quick: the first and last layers' trajectories first, then evenly between.
    step = max(1, len(everything) // max(args.naive_trajectories - 1, 1))
    subset = sorted({*everything[::step][: args.naive_trajectories - 1], everything[-1]})
    naive_trajectories = subset if args.quick else everything
    workers = {
        "floor": Worker("floor", args),
        "floor_engine_cache": Worker("floor", args, True),
        "ours_full": Worker("ours", args, "full"),
        "ours_adapter": Worker("ours", args, "adapter"),
    }
    for _ in range(args.repeats):  # rounds, so that a busy spell hits all three alike
        for worker in workers.values():
            worker.run()
    peaks = {name: worker.stop() for name, worker in workers.items()}
    naive_worker = Worker("naive", args, naive_trajectories)
    naive_worker.run()
    peaks["naive"] = naive_worker.stop()
    floor, ours, ours_adapter = (workers[k] for k in ("floor", "ours_full", "ours_adapter"))
    floor_cache = workers["floor_engine_cache"]
    naive_seconds = naive_worker.best * len(everything) / len(naive_trajectories)
    return {
        "speedup_vs_naive": round(naive_seconds / ours.best, 2),
        "ratio_to_floor": round(ours.best / floor.best, 3),
        "token_agreement": round(agreement(ours.tokens, naive_worker.tokens), 4),
        "adapter_ratio_to_floor": round(ours_adapter.best / floor.best, 3),
        "ratio_to_floor_engine_cache": round(ours.best / floor_cache.best, 3),
        "adapter_speedup_vs_naive": round(naive_seconds / ours_adapter.best, 2),
        "sharing": saved(ours.rows),
        "seconds": {
            "naive_all_trajectories": round(naive_seconds, 2),
            "ours_full": round(ours.best, 3),
            "ours_adapter": round(ours_adapter.best, 3),
            "floor": round(floor.best, 3),
            "floor_engine_cache": round(floor_cache.best, 3),
        },
        "naive_trajectories_timed": len(naive_trajectories),
        "naive_scaled_from_subset": len(naive_trajectories) < len(everything),
        "peak_rss_mb": {name: round(peak) for name, peak in peaks.items()},
        "trajectories": len(everything),
        "new_tokens": args.tokens,
    }


def zoo_row(args) -> dict:
    """Ours (the zoo's adapter pair) and the floor decoding as many tokens per trajectory."""
    ours, floor = Worker("ours", args, "adapter"), Worker("floor", args)
    floor_cache = Worker("floor", args, True)
    ours.run()
    lengths = {(p, layer): len(t) for p, layer, t in ours.tokens}
    n_layers = max(layer for _, layer in lengths) + 1
    n_prompts = max(p for p, _ in lengths) + 1
    order = [lengths[(p, layer)] for layer in range(n_layers) for p in range(n_prompts)]
    for round_ in range(args.repeats):
        if round_:
            ours.run()
        floor.run(order)
        floor_cache.run(order)
    peaks = {
        "ours_adapter": ours.stop(),
        "floor": floor.stop(),
        "floor_engine_cache": floor_cache.stop(),
    }
    return {
        "adapter_ratio_to_floor": round(ours.best / floor.best, 3),
        "adapter_ratio_to_floor_engine_cache": round(ours.best / floor_cache.best, 3),
        "sharing": saved(ours.rows, models=2),
        "seconds": {
            "ours_adapter": round(ours.best, 3),
            "floor": round(floor.best, 3),
            "floor_engine_cache": round(floor_cache.best, 3),
        },
        "peak_rss_mb": {name: round(peak) for name, peak in peaks.items()},
        "trajectories": len(order),
        "prompts": n_prompts,
        "max_new_tokens": args.tokens,
        "mean_tokens": round(sum(order) / len(order), 1),
    }


def sharded_row(args) -> dict:
    """The zoo pair's flagged prompts (resid_post, every layer) patched by `--workers` Ray
    actors (`harness.shards`) beside one process, each from nothing loaded to its tables: the
    sharded side pays the cluster's start and a model load per actor. One torch thread per
    process on both sides, so the tables must be equal."""
    import ray
    import torch

    from harness.config import PatchConfig
    from harness.patch import load_models, patch_site
    from harness.shards import patch_sites

    torch.set_num_threads(1)
    clean, corrupt = zoo_dirs()
    ids, tokens = zoo_prompts(args), zoo_tokens()
    patch = PatchConfig(workers=args.workers)
    start = time.perf_counter()
    one = patch_site(load_models(clean, corrupt), ids, patch, tokens, "resid_post")
    single = time.perf_counter() - start
    start = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    load = {"dtype": "float32", "device": "cpu", "trust_remote_code": False, "device_map": None}
    with tempfile.TemporaryDirectory() as shards:
        sharded_tables = patch_sites(["resid_post"], clean=clean, corrupt=corrupt, load=load,
                                     patch=patch, prompt_ids=ids, limit=tokens,
                                     shard_root=Path(shards), say=lambda _: None)  # fmt: skip
    sharded = time.perf_counter() - start
    ray.shutdown()
    steps, texts = sharded_tables["resid_post"]
    return {
        "sharded_vs_single": round(single / sharded, 3),
        "seconds": {
            "single": round(single, 2),
            "sharded": round(sharded, 2),
            "ray_start": round(ray_start, 2),
        },
        "same_tables": steps.equals(one[0]) and texts.equals(one[1]),
        "workers": args.workers,
        "prompts": len(ids),
        "trajectories": texts.height,
        "max_new_tokens": tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="time the naive loop on a few trajectories, 2 repeats"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument(
        "--rows", default="qwen3,gemma2,gpt2,zoo", help="comma-separated: qwen3, gemma2, gpt2, zoo"
    )
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=4, help="trajectories = layers x prompts")
    parser.add_argument("--prompt-len", type=int, default=48)
    parser.add_argument("--zoo-prompts", type=int, default=16, help="flagged demo prompts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--naive-trajectories", type=int, default=1, help="with --quick: last layer's first"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)"
    )
    parser.add_argument(
        "--workers", type=int, help="also the zoo row sharded over this many Ray actors"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats = min(args.repeats, 2)
    started = time.perf_counter()
    report: dict[str, object] = {}
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in (*SHAPES, "zoo")]
    if unknown:
        sys.exit(f"bench: unknown row {unknown[0]!r}; known: {', '.join([*SHAPES, 'zoo'])}")
    for shape in rows:
        row_args = argparse.Namespace(**vars(args), shape=shape)
        if shape == "zoo" and (missing := zoo_missing()):
            report[shape] = {"skipped": missing}  # a fresh clone: `make bench` still runs
        elif shape == "zoo":
            row_args.tokens = zoo_tokens()
            report[shape] = zoo_row(row_args)
        else:
            report[shape] = random_row(row_args)
        if not args.json:
            print(shape, json.dumps(report[shape]), flush=True)
    if args.workers:
        missing = zoo_missing()
        row_args = argparse.Namespace(**vars(args), shape="zoo")
        report["sharded"] = {"skipped": missing} if missing else sharded_row(row_args)
        if not args.json:
            print("sharded", json.dumps(report["sharded"]), flush=True)
    report["setup"] = {
        "layers": args.layers,
        "prompt_len": args.prompt_len,
        "site": "resid_post",
        "dtype": "float32",
        "hidden": SIZE["hidden_size"],
        "threads": args.threads,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
