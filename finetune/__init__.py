"""Supervised fine-tuning of a clean model into a corrupted one.

The config classes load eagerly (``harness.config`` embeds them); the trainer's names load on
first use, so reading a config never pays for importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from finetune.config import FinetuneConfig, FinetuneDataConfig, LoraConfig
from finetune.errors import FinetuneError

_LAZY = {
    "QA": "finetune.data",
    "FinetuneResult": "finetune.outputs",
    "completed_run": "finetune.outputs",
    "finetune": "finetune.run",
    "finetune_from_config": "finetune.run",
    "latest_checkpoint": "finetune.run",
    "lr_at": "finetune.train",
    "examples_from_config": "finetune.sources",
}

__all__ = [
    "QA",
    "FinetuneConfig",
    "FinetuneDataConfig",
    "FinetuneError",
    "FinetuneResult",
    "LoraConfig",
    "completed_run",
    "examples_from_config",
    "finetune",
    "finetune_from_config",
    "latest_checkpoint",
    "lr_at",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'finetune' has no attribute {name!r}")
