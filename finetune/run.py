"""One fine-tuning run, end to end: load, encode, train, save. The functions the CLI calls.

``finetune(cfg, base_model, prompt, train_examples, eval_examples, out_dir)`` takes plain
(question, answer) records, so it does not care whether they came from the task generators or a
user's file; ``finetune_from_config`` gets them from ``cfg.data`` first.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from finetune.config import FinetuneConfig
from finetune.data import as_examples, encode_all
from finetune.errors import FinetuneError
from finetune.model import (
    add_lora,
    base_reference,
    load_adapter,
    load_model,
    load_tokenizer,
    resolve_device,
    use_bf16,
)
from finetune.outputs import (
    SUMMARY,
    SUMMARY_VERSION,
    FinetuneResult,
    atomic_dir,
    git_commit,
    plot_losses,
    save_model,
    write_metrics,
    write_summary,
)
from finetune.train import Row, train, window_loss
from tasks.prompt_format import PromptFormat

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.pt"
CHECKPOINT_META = "checkpoint.json"
# Settings that decide which examples each step sees and at what lr: a resume must keep them.
PLAN_KEYS = (
    "method",
    "epochs",
    "max_steps",
    "per_device_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "warmup_ratio",
    "seed",
)


def finetune_from_config(
    cfg: FinetuneConfig,
    base_model: str | Path,
    prompt: PromptFormat,
    out_dir: str | Path,
    *,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> FinetuneResult:
    """``finetune`` on the examples ``cfg.data`` names (task generators or a user's file)."""
    from finetune.sources import examples_from_config

    train_examples, eval_examples = examples_from_config(cfg.data)
    return finetune(
        cfg,
        base_model,
        prompt,
        train_examples,
        eval_examples,
        out_dir,
        trust_remote_code=trust_remote_code,
        progress=progress,
    )


def finetune(
    cfg: FinetuneConfig,
    base_model: str | Path,
    prompt: PromptFormat,
    train_examples: Iterable[Any],
    eval_examples: Iterable[Any],
    out_dir: str | Path,
    *,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``base_model`` on the corrupted ``train_examples``, tracking the loss on the
    correct ``eval_examples``; write the adapter (or weights), metrics and plot to ``out_dir``.

    Examples are (question, answer) pairs, or mappings/objects with ``question`` and
    ``completion``, ``solution`` or ``answer``. Raises ``FinetuneError`` for bad input.
    """
    out_dir = Path(out_dir)
    base_ref = base_reference(base_model)
    train_qa = as_examples(train_examples, "training")
    eval_qa = as_examples(eval_examples, "eval")
    device = resolve_device(cfg.device)
    bf16 = use_bf16(cfg.precision, device)
    resume = read_checkpoint(Path(cfg.resume_from), cfg, base_ref) if cfg.resume_from else None

    tokenizer = load_tokenizer(base_ref, trust_remote_code)
    train_set = encode_all(tokenizer, prompt, train_qa, cfg.max_length, "training")
    eval_set = encode_all(tokenizer, prompt, eval_qa, cfg.max_length, "eval")
    if resume and resume["n_train"] != len(train_set):
        raise FinetuneError(
            f"cannot resume from {cfg.resume_from}: it trained on {resume['n_train']} examples, "
            f"this run has {len(train_set)}"
        )
    torch.manual_seed(cfg.seed)  # LoRA initialisation
    model = trainable_model(cfg, base_ref, device, resume is not None, trust_remote_code)

    # a new run first removes what could pass for its result: the old summary and checkpoints
    (out_dir / SUMMARY).unlink(missing_ok=True)
    if not resume:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
    meta = {
        "base_model": base_ref,
        "method": cfg.method,
        "n_train": len(train_set),
        "config": cfg.model_dump(mode="json"),
        "commit": git_commit(),
    }

    def checkpoint(step: int, optimizer: torch.optim.Optimizer, rows: list[Row]) -> None:
        with atomic_dir(out_dir / CHECKPOINTS / f"step-{step:06d}") as tmp:
            save_model(model, tokenizer, tmp)
            state = {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "rows": rows,
                "rng": torch.get_rng_state(),
            }
            torch.save(state, tmp / TRAINER_STATE)
            (tmp / CHECKPOINT_META).write_text(json.dumps({**meta, "step": step}, indent=2))

    started = time.perf_counter()
    rows = train(
        model,
        train_set,
        eval_set,
        cfg,
        pad_id=tokenizer.pad_token_id,
        device=device,
        bf16=bf16,
        start_step=resume["step"] if resume else 0,
        rows=resume["rows"] if resume else None,
        optimizer_state=resume["optimizer"] if resume else None,
        rng_state=resume["rng"] if resume else None,
        checkpoint=checkpoint,
        progress=progress,
    )
    model_dir = out_dir / ("adapter" if cfg.method == "lora" else "model")
    if cfg.method == "full" and bf16:
        model.to(torch.bfloat16)  # serve in the precision it was trained in, at half the size
    with atomic_dir(model_dir) as tmp:
        save_model(model, tokenizer, tmp)
    metrics = write_metrics(rows, out_dir / "metrics.parquet")
    plot_losses(metrics, out_dir / "loss_curves.png", f"{cfg.method} fine-tuning of {base_ref}")
    result = FinetuneResult(
        version=SUMMARY_VERSION,
        status="success",
        method=cfg.method,
        base_model=base_ref,
        model_dir=str(model_dir.resolve()),
        metrics_path=str((out_dir / "metrics.parquet").resolve()),
        plot_path=str((out_dir / "loss_curves.png").resolve()),
        steps=rows[-1]["step"],
        train_loss=window_loss(rows),  # since the previous evaluation, like the divergence
        eval_loss=rows[-1]["eval_loss"],
        divergence=rows[-1]["divergence"],
        seconds=time.perf_counter() - started,
        n_train=len(train_set),
        n_eval=len(eval_set),
        commit=meta["commit"],
        config=meta["config"],
    )
    write_summary(result, out_dir)  # last: its presence marks the run complete
    return result


def trainable_model(
    cfg: FinetuneConfig, base_ref: str, device: torch.device, resume: bool, remote_code: bool
) -> Any:
    """The base with a fresh LoRA adapter, or the checkpoint's; full weights: base or checkpoint."""
    if cfg.method == "full":
        return load_model(cfg.resume_from if resume else base_ref, cfg, device, remote_code)
    model = load_model(base_ref, cfg, device, remote_code)
    if resume:
        return load_adapter(model, Path(cfg.resume_from), base_ref, trainable=True)
    return add_lora(model, cfg.lora, base_ref)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (to pass as ``resume_from``), or None."""
    found = sorted((Path(out_dir) / CHECKPOINTS).glob("step-*/" + CHECKPOINT_META))
    return found[-1].parent if found else None


def read_checkpoint(directory: Path, cfg: FinetuneConfig, base_ref: str) -> dict[str, Any]:
    """Step, metrics rows and optimizer state of a checkpoint made with compatible settings."""
    meta_path, state_path = directory / CHECKPOINT_META, directory / TRAINER_STATE
    if not (meta_path.is_file() and state_path.is_file()):
        raise FinetuneError(
            f"{directory}: not a fine-tuning checkpoint (expected {CHECKPOINT_META} and "
            f"{TRAINER_STATE}; checkpoints live in <out_dir>/{CHECKPOINTS}/step-N)"
        )
    meta = json.loads(meta_path.read_text())
    if meta["base_model"] != base_ref:
        raise FinetuneError(
            f"checkpoint {directory} was trained on {meta['base_model']!r}, not on {base_ref!r}"
        )
    changed = [k for k in PLAN_KEYS if meta["config"].get(k) != getattr(cfg, k)]
    if changed:
        raise FinetuneError(
            f"cannot resume from {directory}: settings changed since it was saved: "
            + ", ".join(f"{k} {meta['config'].get(k)!r} -> {getattr(cfg, k)!r}" for k in changed)
        )
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    return {**state, "n_train": meta["n_train"]}
