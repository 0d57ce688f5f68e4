"""Loading the base model and tokenizer, wrapping it for training, and checking adapters fit.

Every failure a user can cause (a missing path, an adapter for another base, target modules the
model does not have) becomes one ``FinetuneError`` line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from finetune.config import FinetuneConfig, LoraConfig
from finetune.errors import FinetuneError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def base_reference(model: str | Path) -> str:
    """How an adapter names its base: an absolute directory, or the hub id as given."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FinetuneError(f"{model}: no config.json, not a Hugging Face model directory")
        return str(path.resolve())
    if isinstance(model, str) and HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return model
    raise FinetuneError(
        f"model path {str(model)!r} does not exist "
        "(expected a model directory or a hub id like Qwen/Qwen3-4B)"
    )


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise FinetuneError("finetune.device is cuda but no CUDA GPU is visible; use auto or cpu")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast on GPUs that support it (``auto``), or when asked; fp32 otherwise."""
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def load_tokenizer(base: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise FinetuneError(f"cannot load the tokenizer of {base!r}: {first_line(exc)}") from None
    if tokenizer.pad_token_id is None:  # padding is masked out; any id will do
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    base: str, cfg: FinetuneConfig, device: torch.device, trust_remote_code: bool = False
) -> Any:
    """The base causal LM, ready to train with ``cfg.method``.

    LoRA in bf16 keeps the frozen base in bf16 (half the memory) and the adapter in fp32; full
    fine-tuning keeps fp32 master weights and relies on autocast, so AdamW never updates bf16.
    """
    from transformers import AutoModelForCausalLM

    frozen_bf16 = cfg.method == "lora" and use_bf16(cfg.precision, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base,
            dtype=torch.bfloat16 if frozen_bf16 else torch.float32,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise FinetuneError(f"cannot load the model {base!r}: {first_line(exc)}") from None
    model.to(device)
    model.config.use_cache = False  # no KV cache in training; also required by checkpointing
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def add_lora(model: Any, lora: LoraConfig, base_ref: str) -> Any:
    """Wrap ``model`` in a fresh trainable LoRA adapter; only the adapter's weights train."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    missing = [t for t in lora.target_modules if not has_module(model, t)]
    if missing:
        raise FinetuneError(
            f"LoRA target modules {missing} not found in the model "
            f"(linear layers it has: {', '.join(linear_names(model)[:12])})"
        )
    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_ref,
    )
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = base_ref
    return peft_model


def load_adapter(model: Any, adapter_dir: Path, base_ref: str, trainable: bool = True) -> Any:
    """Put a saved adapter on ``model``; refuse one made for another base or shape."""
    from peft import PeftModel

    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise FinetuneError(f"{adapter_dir}: no adapter_config.json, not a LoRA adapter directory")
    saved_base = json.loads(config_path.read_text()).get("base_model_name_or_path")
    if saved_base and saved_base != base_ref:
        raise FinetuneError(
            f"adapter {adapter_dir} was trained on {saved_base!r}, not on the base {base_ref!r}"
        )
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise FinetuneError(
            f"adapter {adapter_dir} does not fit the base {base_ref!r}: {mismatch(exc)}"
        ) from None


def has_module(model: Any, target: str) -> bool:
    """Whether a module name (or name suffix, as peft matches them) exists in ``model``."""
    return any(name == target or name.endswith(f".{target}") for name, _ in model.named_modules())


def linear_names(model: Any) -> list[str]:
    linear = (n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    return sorted({n.rsplit(".", 1)[-1] for n in linear})


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices, none on biases and norm scales (vectors), as in nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def mismatch(exc: BaseException) -> str:
    """The first ``size mismatch for ...`` line of a state-dict error, else its first line."""
    lines = [line.strip() for line in str(exc).splitlines()]
    return next((line for line in lines if line.startswith("size mismatch")), first_line(exc))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
