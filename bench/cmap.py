"""Benchmark of the CMAP patcher, measured side by side in one run.

On a random Qwen3-shaped model (8 layers, ~29M parameters, float32), patching resid_post of
every layer for 4 prompts (32 trajectories, about one prompt's worth on Qwen3-4B's 36 layers)
while generating 128 tokens, it times:

  (a) naive: the test suite's reference (the paper's loop: per trajectory, per token, three
      full forwards of the whole sequence without a cache), with a full corrupted model;
  (b) ours: `patchers.run_cmap`, once with a full corrupted model and once with a LoRA adapter
      (one copy of the base weights for all rows);
  (c) floor: a plain KV-cached greedy decoding loop (model forward + DynamicCache + argmax, no
      `generate()`) of the clean model alone over the same number of trajectories;

and prints speedup_vs_naive = a/b and ratio_to_floor = b/c (full corrupted model; the adapter's
figures beside them), the token agreement of (b) with (a) and each measurement's peak resident
memory. Each measurement runs in its own process (so peak memory is its own) with one torch
thread (on a shared 2-core machine two threads swing timings by 10x); (b) and (c) run in
`--repeats` interleaved rounds and keep their best, since other work only ever adds time.
The naive loop costs the same for every trajectory (one at a time, same lengths, no eos);
with `--quick` it runs `--naive-trajectories` of them (the last layer's first, where the patch
changes most; then evenly spread) and its time is scaled to all of them, which the JSON says.

    .venv/bin/python bench/cmap.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "patchers")]

SHAPE = dict(
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


def build(args, kind: str):
    """(clean, corrupted side) for kind 'full' or 'adapter'; deterministic."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen3Config

    from patchers.models import LORA_TARGETS

    torch.manual_seed(0)
    config = Qwen3Config(num_hidden_layers=args.layers, **SHAPE)
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    if kind == "full":
        from tiny_models import perturbed

        return clean, perturbed(clean, scale=0.05)
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=list(LORA_TARGETS),  # the maps whose base weights CMAP shares
    )
    peft_model = get_peft_model(clean, lora)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    return clean, peft_model.eval()


def prompts(args) -> list[list[int]]:
    import torch

    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(
        0, SHAPE["vocab_size"], (args.prompts, args.prompt_len), generator=generator
    )
    return ids.tolist()


def ours_runner(args, kind: str):
    """A function that runs the patcher once: (seconds, tokens per trajectory)."""
    from patchers.cmap import run_cmap
    from patchers.models import ModelPair

    pair = ModelPair(*build(args, kind))

    def run() -> tuple[float, list]:
        start = time.perf_counter()
        result = run_cmap(pair, prompts(args), max_new_tokens=args.tokens)
        seconds = time.perf_counter() - start
        return seconds, result.generations.select("prompt_id", "layer", "token_ids").rows()

    return run


def floor_runner(args):
    """A function that runs the floor once: greedy KV-cached decoding, clean model alone."""
    import torch

    clean, _ = build(args, "full")
    rows = [p for _ in range(args.layers) for p in prompts(args)]

    @torch.inference_mode()
    def run() -> tuple[float, None]:
        start = time.perf_counter()
        out = clean(input_ids=torch.tensor(rows), use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1)
        for _ in range(args.tokens - 1):
            out = clean(
                input_ids=token[:, None],
                past_key_values=out.past_key_values,
                use_cache=True,
                logits_to_keep=1,
            )
            token = out.logits[:, -1].argmax(-1)
        return time.perf_counter() - start, None

    return run


def naive_runner(args, trajectories: list[tuple[int, int]]):
    """A function that runs the naive reference once on the given (prompt, layer) pairs."""
    from patchers.reference import full_model_side, reference_cmap

    clean, corrupt = build(args, "full")
    sides = full_model_side(clean), full_model_side(corrupt)
    all_prompts = prompts(args)

    def run() -> tuple[float, list]:
        tokens = []
        start = time.perf_counter()
        for prompt_id, layer in trajectories:
            steps = reference_cmap(
                *sides, all_prompts[prompt_id], "resid_post", layer, None, args.tokens
            )
            tokens.append((prompt_id, layer, [s["token_id"] for s in steps]))
        return time.perf_counter() - start, tokens

    return run


def _worker(name: str, args, extra, commands, results) -> None:
    """Build once, then run on each command; at the end report this process's peak memory."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    runner = {"floor": floor_runner, "ours": ours_runner, "naive": naive_runner}[name]
    run = runner(args, *extra)
    while commands.get() == "run":
        results.put(run())
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
        self.best, self.tokens = float("inf"), None

    def run(self) -> None:
        self.commands.put("run")
        seconds, self.tokens = self.results.get()
        self.best = min(self.best, seconds)

    def stop(self) -> float:
        """Peak resident memory in MB."""
        self.commands.put("stop")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="time the naive loop on a few trajectories, 2 repeats"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=4, help="trajectories = layers x prompts")
    parser.add_argument("--prompt-len", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--naive-trajectories", type=int, default=1, help="with --quick: last layer's first"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)"
    )
    args = parser.parse_args()

    if args.quick:
        args.repeats = min(args.repeats, 2)
    everything = [(p, layer) for layer in range(args.layers) for p in range(args.prompts)]
    # With --quick: the first and last layers' trajectories first, then evenly between.
    step = max(1, len(everything) // max(args.naive_trajectories - 1, 1))
    subset = sorted({*everything[::step][: args.naive_trajectories - 1], everything[-1]})
    naive_trajectories = subset if args.quick else everything
    started = time.perf_counter()
    workers = {
        "floor": Worker("floor", args),
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
    naive_seconds = naive_worker.best * len(everything) / len(naive_trajectories)
    report = {
        "speedup_vs_naive": round(naive_seconds / ours.best, 2),
        "ratio_to_floor": round(ours.best / floor.best, 3),
        "token_agreement": round(agreement(ours.tokens, naive_worker.tokens), 4),
        "adapter_ratio_to_floor": round(ours_adapter.best / floor.best, 3),
        "adapter_speedup_vs_naive": round(naive_seconds / ours_adapter.best, 2),
        "seconds": {
            "naive_all_trajectories": round(naive_seconds, 2),
            "ours_full": round(ours.best, 3),
            "ours_adapter": round(ours_adapter.best, 3),
            "floor": round(floor.best, 3),
        },
        "naive_trajectories_timed": len(naive_trajectories),
        "naive_scaled_from_subset": len(naive_trajectories) < len(everything),
        "peak_rss_mb": {name: round(peak) for name, peak in peaks.items()},
        "setup": {
            "layers": args.layers,
            "trajectories": args.layers * args.prompts,
            "new_tokens": args.tokens,
            "prompt_len": args.prompt_len,
            "site": "resid_post",
            "dtype": "float32",
            "hidden": SHAPE["hidden_size"],
            "threads": args.threads,
        },
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(report))
        return
    scaled = ", scaled from a subset" if report["naive_scaled_from_subset"] else ""
    print(f"naive reference (all trajectories{scaled}): {naive_seconds:.1f} s")
    print(
        f"patcher, full corrupted model: {ours.best:.2f} s  "
        f"({report['speedup_vs_naive']}x naive, {report['ratio_to_floor']}x floor)"
    )
    print(
        f"patcher, LoRA adapter:         {ours_adapter.best:.2f} s  "
        f"({report['adapter_speedup_vs_naive']}x naive, {report['adapter_ratio_to_floor']}x floor)"
    )
    print(f"floor (clean model, KV cache): {floor.best:.2f} s")
    print(f"token agreement with the naive reference: {report['token_agreement']:.2%}")
    print(f"peak RSS (MB): {report['peak_rss_mb']}")


if __name__ == "__main__":
    main()
