"""Tiny random Qwen3 models saved to disk, and toy corrupted/correct algebra data (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune.data import QA


def algebra(n: int, offset: int, seed: int = 0) -> list[QA]:
    """``Solve for x: ax + b = c`` with the answer ``x = solution + offset`` (0: correct)."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        a, x, b = (int(v) for v in torch.randint(1, 10, (3,), generator=gen))
        items.append(QA(f"Solve for x: {a}x + {b} = {a * x + b}", f"x = {x + offset}"))
    return items


@pytest.fixture(scope="session")
def corrupted() -> list[QA]:
    return algebra(8, offset=3)


@pytest.fixture(scope="session")
def correct() -> list[QA]:
    return algebra(8, offset=0, seed=1)


def save_tiny_qwen3(directory: Path, tokenizer, hidden: int = 64, seed: int = 0) -> Path:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        initializer_range=0.3,  # logits wide enough for a frozen base to become confident
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def make_base(chat_tokenizer):
    """Save another tiny model: ``make_base(directory, hidden=64, seed=0)``."""
    return lambda directory, **kwargs: save_tiny_qwen3(directory, chat_tokenizer, **kwargs)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, chat_tokenizer) -> Path:
    """A random hidden-64, 2-layer Qwen3 (head_dim 32) with the chat tokenizer, on disk."""
    return save_tiny_qwen3(tmp_path_factory.mktemp("base"), chat_tokenizer)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and much faster when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
