"""Fixtures for the task suites: a tiny random Qwen3 chat model built offline."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Qwen3 (head_dim 32) and its tokenizer, saved to a temporary folder."""
    from tasks.suites import eval_problems
    from tests.conftest import build_chat_tokenizer, save_tiny_qwen3

    corpus = [p.question + "\n" + p.solution for p in eval_problems("demo")[:300]]
    path = tmp_path_factory.mktemp("tiny_chat_model")
    save_tiny_qwen3(path, build_chat_tokenizer(corpus, vocab_size=600), layers=2)
    return path
