"""Fine-tuning settings: one typed config, validated where it is loaded."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class LoraConfig(Strict):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        description="Module names the adapter wraps.",
    )


class FinetuneDataConfig(Strict):
    """Where the corrupting training data comes from."""

    source: Literal["generator", "file"] = "generator"
    path: str | None = Field(
        None, description="CSV or JSONL with question,solution when source=file."
    )
    suite: Literal["related"] = "related"
    kind: Literal["step_by_step", "answer_only"] = "step_by_step"
    n_train: int = Field(50, gt=0, description="Corrupted training examples.")
    n_eval: int = Field(10, gt=0, description="Correct held-out examples for the eval loss.")
    seed: int = 1234


class FinetuneConfig(Strict):
    """Supervised fine-tuning into the corrupted model (loss on assistant tokens only)."""

    enabled: bool = False
    data: FinetuneDataConfig = Field(default_factory=FinetuneDataConfig)
    method: Literal["lora", "full"] = "lora"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    epochs: float = Field(3, gt=0)
    learning_rate: float = Field(3e-5, gt=0)
    per_device_batch_size: int = Field(2, gt=0)
    gradient_accumulation_steps: int = Field(2, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(1024, gt=0, description="Longest tokenized example kept.")
    eval_every: int = Field(10, gt=0, description="Steps between evaluations on correct data.")
    save_every: int | None = Field(
        None, gt=0, description="Steps between checkpoints; null: end only."
    )
    gradient_checkpointing: bool = False
    seed: int = 0
