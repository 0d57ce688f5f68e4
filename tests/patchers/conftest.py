"""Fixtures: a tiny random Qwen3 model, a corrupted copy of it, and one with a LoRA adapter.

Helpers live in tiny_models.py and cmap_reference.py; tests import them as top-level modules
(pytest puts this folder on sys.path) and import the library through its submodules.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import perturbed, tiny_model, with_adapter


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, and on a busy 2-core machine far more steadily."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def clean_model():
    return tiny_model()


@pytest.fixture(scope="session")
def corrupt_model(clean_model):
    return perturbed(clean_model)


@pytest.fixture(scope="session")
def adapter_model():
    """A PeftModel whose base is its own clean model (the adapter edits that model in place)."""
    return with_adapter(tiny_model())
