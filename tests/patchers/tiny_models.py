"""Tiny random decoder models of every family the patcher knows (no downloads): a clean one, a
corrupted copy, a LoRA adapter."""

from __future__ import annotations

import copy

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

SIZES = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    tie_word_embeddings=False,
    initializer_range=0.2,  # peaked logits: argmaxes far from ties
)
# The feature of each family its test exercises, in its config.
WINDOW = 4  # shorter than the prompts plus the steps: sliding windows really slide
FAMILIES: dict[str, tuple[str, dict]] = {
    "llama": (
        "LlamaConfig",
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8,
            }
        },
    ),
    "mistral": ("MistralConfig", {"sliding_window": WINDOW}),
    "qwen2": ("Qwen2Config", {}),  # q/k/v biases
    "qwen3": ("Qwen3Config", {}),  # q/k norms
    "qwen3_moe": (
        "Qwen3MoeConfig",
        {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
    ),
    "gemma2": (
        "Gemma2Config",
        {
            "sliding_window": WINDOW,
            "attn_logit_softcapping": 5.0,
            "final_logit_softcapping": 3.0,
            "query_pre_attn_scalar": 16,
        },
    ),
    "gemma3_text": ("Gemma3TextConfig", {"sliding_window": WINDOW, "sliding_window_pattern": 2}),
    "phi3": ("Phi3Config", {"partial_rotary_factor": 0.5}),  # fused qkv and gate_up
    "olmo2": ("Olmo2Config", {}),
    "granite": (
        "GraniteConfig",
        {
            "embedding_multiplier": 2.0,
            "residual_multiplier": 0.5,
            "attention_multiplier": 0.2,
            "logits_scaling": 2.0,
        },
    ),
    "gpt2": ("GPT2Config", {"n_layer": 4, "n_embd": 64, "n_head": 4, "n_positions": 256}),
    "gpt_neox": ("GPTNeoXConfig", {"rotary_pct": 0.25, "use_parallel_residual": True}),
}
_OWN_SIZES = {"gpt2": {"vocab_size", "initializer_range", "tie_word_embeddings"}}
PROMPTS = [[5, 17, 42, 8, 23, 61, 3], [11, 90, 7]]  # different lengths: left padding is exercised


def tiny_config(family: str = "qwen3", **overrides):
    name, features = FAMILIES[family]
    sizes = SIZES
    if family in _OWN_SIZES:
        sizes = {k: v for k, v in SIZES.items() if k in _OWN_SIZES[family]}
    special = dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id"))
    return getattr(transformers, name)(**{**sizes, **special, **features, **overrides})


def tiny_model(family: str = "qwen3", seed: int = 0, **overrides):
    """A random float32 model of one family, deterministic per seed."""
    config = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def perturbed(model, seed: int = 1, scale: float = 0.05):
    """A 'fine-tuned' copy: every weight moved by noise of `scale` times its own spread."""
    copy_ = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in copy_.parameters():
            spread = param.std() if param.numel() > 1 and param.std() > 0 else param.abs().mean()
            param += scale * spread * torch.randn(param.shape, generator=generator)
    return copy_.eval()


def with_adapter(model, seed: int = 2, scale: float = 0.1) -> PeftModel:
    """Attach a LoRA adapter with non-zero random A and B to every linear map of the layers
    (an MoE model's router and experts are parameters, which peft adapts apart: left out)."""
    targets = "all-linear"
    if model.config.model_type == "qwen3_moe":
        targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=targets,
        fan_in_fan_out=model.config.model_type == "gpt2",  # GPT-2's Conv1D stores W transposed
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(scale * torch.randn(param.shape, generator=generator))
    return peft_model.eval()
