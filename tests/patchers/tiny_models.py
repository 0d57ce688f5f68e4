"""Tiny random decoder models (no downloads): a clean one, a corrupted copy, a LoRA adapter."""

from __future__ import annotations

import copy

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

from patchers.models import LORA_TARGETS

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
FAMILY_CONFIGS = {
    "qwen3": Qwen3Config,
    "llama": LlamaConfig,
    "mistral": MistralConfig,
    "qwen2": Qwen2Config,
}
PROMPTS = [[5, 17, 42, 8, 23, 61, 3], [11, 90, 7]]  # different lengths: left padding is exercised


def tiny_model(family: str = "qwen3", seed: int = 0, **overrides):
    """A random float32 model of one family, deterministic per seed."""
    config = FAMILY_CONFIGS[family](**{**SIZES, **overrides})
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
    """Attach a LoRA adapter with non-zero random A and B to every linear map of the layers."""
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),  # the maps whose base weights CMAP shares
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(scale * torch.randn(param.shape, generator=generator))
    return peft_model.eval()
