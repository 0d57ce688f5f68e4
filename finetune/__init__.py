"""Supervised fine-tuning of a clean model into a corrupted one."""

from finetune.config import FinetuneConfig, FinetuneDataConfig, LoraConfig

__all__ = ["FinetuneConfig", "FinetuneDataConfig", "LoraConfig"]
