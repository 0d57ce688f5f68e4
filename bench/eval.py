"""The same suite through the vLLM path and lm-eval's HF backend, same model, one run.

Prints samples/s for both, their ratio, the share of identical greedy outputs, and the engine
start-up time apart from the evaluation (``--enforce-eager false``: the engine compiled, vLLM's
CPU default, which starts 37-40 s slower and decodes faster; README). The vLLM path
is the in-process engine (``eval.engine: vllm``); ``--server`` also times the OpenAI-server path.

Both engines run in bfloat16 by default (``--dtype float32`` for parity): on a *random* model,
bf16 rounding differs between the engines' kernels and flips near-tied greedy tokens, so the
share of identical outputs is only meaningful in float32 (or on a trained model, as in the
zoo parity test).

    python bench/eval.py                 # 256 docs x 128 tokens on a ~25M-parameter model
    python bench/eval.py --quick --json  # 128 docs x 96 tokens; one JSON line: vllm_vs_hf, ...
    python bench/eval.py --model DIR     # a model of your own (full weights)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CORPUS = [
    "Solve for x: 2x + 3 = 7. We are given the equation. Subtract 3 from both sides.",
    "**Answer:** 2. Divide both sides by 2. What is the capital of France? Paris.",
]


def build_model(path: Path, hidden: int, layers: int) -> Path:
    """A random Qwen3-shaped model (head_dim 32) with the zoo's tokenizer, built offline.

    A large initialisation keeps its greedy outputs varied and rarely at end-of-turn, so both
    engines generate close to the full token budget.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from harness.zoo.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(CORPUS * 50, vocab_size=1000)
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 32,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        initializer_range=0.1,
    )
    Qwen3ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def params(path: Path) -> int:
    import math

    from safetensors import safe_open

    total = 0
    for file in path.glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    return total


EAGER = {"auto": None, "true": True, "false": False}  # eval.serve.enforce_eager


def config(work: Path, model: Path, docs: int, tokens: int, dtype: str, eager: bool | None = None):
    """The benchmarks' experiment: the related suite, `docs` items per task, greedy `tokens`."""
    from harness.config import ExperimentConfig

    return ExperimentConfig.model_validate(
        {
            "name": "bench",
            "output_dir": str(work),
            "finetune": {"enabled": False},
            "models": {"clean": str(model), "corrupt": str(model)},
            "eval": {
                "suites": ["related"],
                "level": "demo",
                "limit": docs,
                "max_new_tokens": tokens,
                "batch_size": 64,
                "bootstrap_samples": 0,
                "serve": {"dtype": dtype, "kv_cache_gb": 1, "enforce_eager": eager},
            },
        }
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 docs x 96 tokens")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--model", type=Path, help="model directory (default: a random one)")
    parser.add_argument("--docs", type=int)
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--server", action="store_true", help="also time the server path")
    parser.add_argument(
        "--enforce-eager",
        default="auto",
        choices=list(EAGER),
        help="eval.serve.enforce_eager (auto: eager on CPU, compiled on GPUs)",
    )
    args = parser.parse_args(argv)
    docs = args.docs or (128 if args.quick else 256)
    tokens = args.tokens or (96 if args.quick else 128)

    from harness.evaluate import run_eval

    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    # The quick run keeps the full-size model: on a sub-1M model both engines are all overhead.
    model = args.model or build_model(work / "model", 512, 6)
    cfg = config(work, model, docs, tokens, args.dtype, EAGER[args.enforce_eager])
    runs = {}
    engines = ("vllm", "vllm-server", "hf") if args.server else ("vllm", "hf")
    for engine in engines:
        runs[engine] = run_eval(cfg, {"clean": str(model)}, engine=engine, out_dir=work / engine)
    rate = {e: r.records.height / r.seconds["eval:clean"] for e, r in runs.items()}
    joined = runs["vllm"].records.join(runs["hf"].records, on=["task", "doc_id"], suffix="_hf")
    identical = float((joined["response"] == joined["response_hf"]).mean())
    # vLLM's detokenizer withholds an unfinished UTF-8 sequence at the end of an output, HF
    # decodes it as U+FFFD: the same tokens, different text. Random byte-level models hit this.
    agree = float(
        (joined["response"] == joined["response_hf"].str.strip_chars_end("\ufffd")).mean()
    )
    result = {
        "vllm_vs_hf": round(rate["vllm"] / rate["hf"], 3),
        "outputs_agree": round(agree, 4),
        "outputs_identical_text": round(identical, 4),
        "vllm_samples_per_s": round(rate["vllm"], 3),
        "hf_samples_per_s": round(rate["hf"], 3),
        "vllm_eval_s": round(runs["vllm"].seconds["eval:clean"], 2),
        "hf_eval_s": round(runs["hf"].seconds["eval:clean"], 2),
        "vllm_startup_s": round(runs["vllm"].seconds["startup"], 2),
        "samples": runs["vllm"].records.height,
        "max_new_tokens": tokens,
        "model_params": params(Path(model)),
        "dtype": args.dtype,
        "enforce_eager": args.enforce_eager,
    }
    if args.server:
        result["server_vs_hf"] = round(rate["vllm-server"] / rate["hf"], 3)
        result["server_startup_s"] = round(runs["vllm-server"].seconds["startup"], 2)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return result


if __name__ == "__main__":
    main()
