"""Training the zoo's clean model from scratch: small, fast steps on length-bucketed batches.

On 2 CPU cores many small steps beat few large ones, and batching examples of similar length
avoids paying for padding; the loss covers answer tokens only, like the fine-tuning that follows.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

from finetune.data import Encoded, collate, token_losses
from finetune.model import param_groups
from finetune.train import lr_at


def length_buckets(encoded: Sequence[Encoded], batch_size: int, seed: int) -> list[list[int]]:
    """Batches of indices of similar length: a seeded shuffle, then sorting within windows."""
    rng = random.Random(seed)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = batch_size * 32
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(encoded[i].input_ids))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def batched(encoded: Sequence[Encoded], batch_size: int, seed: int) -> list[list[Encoded]]:
    """Length-bucketed batches of examples (``length_buckets`` gives indices)."""
    return [[encoded[i] for i in b] for b in length_buckets(encoded, batch_size, seed)]


def pretrain(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    pad_id: int,
    warmup_ratio: float = 0.05,
    weight_decay: float = 0.01,
    seed: int = 0,
    bf16: bool = False,
    first: Sequence[Encoded] = (),
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` for ``steps`` optimizer steps; returns the loss per step.

    ``first`` (drills) is trained through once, before ``encoded`` is cycled through; both are
    batched by length.
    """
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(
        param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95), fused=False
    )
    model.train()
    losses: list[float] = []
    queue = batched(first, batch_size, seed)
    epoch = 0
    for step in range(steps):
        if not queue:
            queue = batched(encoded, batch_size, seed + epoch)
            epoch += 1
        batch = collate(queue.pop(), pad_id)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup_ratio)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        total, count = token_losses(logits, batch["labels"])
        loss = total / max(count, 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step:
            on_step(step, losses[-1])
    model.eval()
    return losses
