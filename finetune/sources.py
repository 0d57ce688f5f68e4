"""Training and held-out examples named by a config: the task generators or a user's file.

The trainer takes plain (question, answer) records; this module is the thin glue that turns a
``FinetuneDataConfig`` into them. Training data is corrupted; held-out data is always correct.
"""

from __future__ import annotations

from finetune.config import FinetuneDataConfig
from finetune.data import QA
from finetune.errors import FinetuneError


def examples_from_config(data: FinetuneDataConfig) -> tuple[list[QA], list[QA]]:
    """(corrupted training examples, correct held-out examples) for ``data``."""
    raise FinetuneError(
        "building fine-tuning data from finetune.data needs the task generators and file "
        "importer of issue #3 (tasks/), which have not landed; call finetune.finetune() with "
        "your own (question, answer) lists meanwhile"
    )
