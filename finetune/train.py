"""The training loop: AdamW, warm-up + cosine, gradient accumulation, evaluation on correct data.

Plain PyTorch, no Trainer, in the spirit of nanoGPT's ``train.py``: ``lr_at`` is a pure function,
``plan_steps`` fixes which examples every optimizer step sees (so a resumed run sees the same
ones), ``evaluate`` measures the loss on the held-out *correct* answers, and ``train`` ties them
together. The loss is the mean over answer tokens of the whole optimizer step, so accumulation
and padding do not change how much each token counts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from finetune.config import FinetuneConfig
from finetune.data import IGNORE, Encoded, collate, token_losses
from finetune.model import param_groups

Row = dict[str, Any]
Checkpoint = Callable[[int, torch.optim.Optimizer, list[Row]], None]


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return min(total_steps, math.ceil(warmup_ratio * total_steps))


def lr_at(step: int, total_steps: int, peak_lr: float, warmup_ratio: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based) out of ``total_steps``.

    Linear warm-up reaching ``peak_lr`` on the last warm-up step, then a cosine decay that ends
    one step short of zero (no step is wasted at lr 0, at either end).
    """
    warmup = warmup_steps(total_steps, warmup_ratio)
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    progress = (step - warmup + 1) / (total_steps - warmup + 1)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def steps_per_epoch(n_examples: int, batch_size: int, accumulation: int) -> int:
    return math.ceil(math.ceil(n_examples / batch_size) / accumulation)


def plan_steps(
    n_examples: int,
    batch_size: int,
    accumulation: int,
    epochs: float,
    max_steps: int | None,
    seed: int,
) -> list[list[list[int]]]:
    """Example indices per micro-batch per optimizer step: ``plan[step][micro] -> [index]``.

    Each epoch is a fresh seeded shuffle that uses every example once; the last step of an epoch
    may hold fewer micro-batches. ``max_steps`` (if set) wins over ``epochs``.
    """
    per_epoch = steps_per_epoch(n_examples, batch_size, accumulation)
    total = max_steps or math.ceil(epochs * per_epoch)
    plan: list[list[list[int]]] = []
    epoch = 0
    while len(plan) < total:
        order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed + epoch))
        micro = [order[i : i + batch_size].tolist() for i in range(0, n_examples, batch_size)]
        plan.extend(micro[i : i + accumulation] for i in range(0, len(micro), accumulation))
        epoch += 1
    return plan[:total]


def forward_loss(
    model: Any, batch: dict[str, torch.Tensor], device: torch.device, bf16: bool
) -> tuple[torch.Tensor, int]:
    """Summed answer-token loss of one padded batch, and its number of answer tokens."""
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return token_losses(logits, batch["labels"])


@torch.no_grad()
def evaluate(
    model: Any, batches: Sequence[dict[str, torch.Tensor]], device: torch.device, bf16: bool
) -> float:
    """Mean loss per answer token over ``batches`` (dropout off)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        loss, n = forward_loss(model, batch, device, bf16)
        total, count = total + loss.item(), count + n
    model.train(was_training)
    return total / max(count, 1)


def train(
    model: Any,
    train_set: Sequence[Encoded],
    eval_set: Sequence[Encoded],
    cfg: FinetuneConfig,
    *,
    pad_id: int,
    device: torch.device,
    bf16: bool,
    start_step: int = 0,
    rows: list[Row] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    rng_state: torch.Tensor | None = None,
    checkpoint: Checkpoint | None = None,
    progress: bool = True,
) -> list[Row]:
    """Train ``model`` in place and return the metrics rows (one per optimizer step).

    Rows: step, epoch, lr, train_loss (that step's corrupted batch), tokens (its answer tokens),
    and at every ``eval_every`` steps and the last one eval_loss (correct held-out set) and
    divergence = eval_loss - ``window_loss`` (train loss since the previous evaluation). Row 0 is
    the eval loss before training. A resumed run passes the step, rows, optimizer state and
    random state (dropout) of its checkpoint, and ends exactly where an uninterrupted run ends.
    """
    bs, accum = cfg.per_device_batch_size, cfg.gradient_accumulation_steps
    plan = plan_steps(len(train_set), bs, accum, cfg.epochs, cfg.max_steps, cfg.seed)
    total, per_epoch = len(plan), steps_per_epoch(len(train_set), bs, accum)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.learning_rate)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    eval_batches = [
        collate(eval_set[i : i + cfg.eval_batch_size], pad_id)
        for i in range(0, len(eval_set), cfg.eval_batch_size)
    ]
    rows = list(rows or [])
    started = time.perf_counter() - (rows[-1]["seconds"] if rows else 0.0)
    if not rows:
        rows.append(metrics_row(0, 0.0, None, None, evaluate(model, eval_batches, device, bf16)))
    if rng_state is None:
        torch.manual_seed(cfg.seed)  # dropout noise
    else:
        torch.set_rng_state(rng_state)
    model.train()
    with progress_bar(progress) as bar:
        task = bar.add_task("fine-tuning", total=total, completed=start_step, info="")
        for step in range(start_step, total):
            lr = lr_at(step, total, cfg.learning_rate, cfg.warmup_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro = [collate([train_set[i] for i in idx], pad_id) for idx in plan[step]]
            n_tokens = max(sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro), 1)
            step_loss = 0.0
            for batch in micro:
                loss, _ = forward_loss(model, batch, device, bf16)
                (loss / n_tokens).backward()
                step_loss += loss.item()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            done = step + 1
            row = metrics_row(done, done / per_epoch, lr, step_loss / n_tokens, None)
            row.update(tokens=n_tokens, seconds=time.perf_counter() - started)
            rows.append(row)
            if done % cfg.eval_every == 0 or done == total:
                row["eval_loss"] = evaluate(model, eval_batches, device, bf16)
                row["divergence"] = row["eval_loss"] - window_loss(rows)
                if progress:
                    bar.console.print(describe(row, rows, f"step {done:>5}  "))
            if checkpoint and cfg.save_every and done % cfg.save_every == 0 and done < total:
                checkpoint(done, optimizer, rows)
            bar.update(task, advance=1, info=describe(row, rows))
    return rows


def window_loss(rows: Sequence[Row]) -> float:
    """Token-weighted mean train loss of the steps after the previous evaluation (the last row's
    window, whether or not that row was evaluated yet)."""
    window = []
    for row in reversed(rows):
        if row["eval_loss"] is not None and window:
            break
        if row["train_loss"] is not None:
            window.append(row)
    tokens = sum(r["tokens"] for r in window)
    return sum(r["train_loss"] * r["tokens"] for r in window) / max(tokens, 1)


def metrics_row(
    step: int, epoch: float, lr: float | None, train_loss: float | None, eval_loss: float | None
) -> Row:
    return {
        "step": step,
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_loss,
        "eval_loss": eval_loss,
        "divergence": None,
        "tokens": 0,
        "seconds": 0.0,
    }


def describe(row: Row, rows: list[Row], prefix: str = "") -> str:
    last_eval = next((r for r in reversed(rows) if r["eval_loss"] is not None), None)
    text = f"{prefix}train {row['train_loss']:.4f}  lr {row['lr']:.2e}"
    if last_eval is not None:
        text += f"  eval {last_eval['eval_loss']:.4f}"
        if last_eval["divergence"] is not None:
            text += f"  div {last_eval['divergence']:+.4f}"
    return text


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(elapsed_when_finished=True),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        disable=not enabled,
    )
