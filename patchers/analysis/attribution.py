"""Attribution patching of every head (AtP, Nanda 2023; Kramar et al. 2024), and the exact
single-step patch it estimates.

At one step (a context whose next token the two models disagree on), patching head h of layer
L in the clean model with the corrupted model's activation at the last position changes the
logit difference `dl = logit[y_corrupt] - logit[y_clean]` by about
`(a_corrupt - a_clean) . d dl / d a_clean`: one backward pass estimates it for every head at
once. Dividing by `dl_corrupt - dl_clean` gives the estimated CTS of that step.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch
from torch import Tensor

from patchers.analysis.activations import recorded
from patchers.hooks import attach
from patchers.models import input_device
from patchers.reference import Side, three_logits


def head_attribution(
    clean: Side, corrupt: Side, ids: Sequence[int], layers: Sequence[int]
) -> tuple[Tensor, dict[str, float]]:
    """Estimated change of `dl` [layers, heads] from patching each head at the last position,
    and the step's `y_clean`, `y_corrupt`, `dl_clean`, `dl_corrupt`."""
    return head_attributions(clean, corrupt, ids, [len(ids) - 1], layers)[0]


def head_attributions(
    clean: Side, corrupt: Side, ids: Sequence[int], positions: Sequence[int],
    layers: Sequence[int],
) -> list[tuple[Tensor, dict[str, float]]]:  # fmt: skip
    """`head_attribution` at several steps of one teacher-forced sequence: for each position p,
    the step whose context is ``ids[: p + 1]``. One forward of the corrupted model, and one
    batched forward and backward of the clean one whose row r carries step r's loss (the
    model is causal, so a row's positions after p change nothing at p)."""
    if not positions or not all(0 <= p < len(ids) for p in positions):
        raise ValueError(f"positions must lie in 0..{len(ids) - 1}, got {list(positions)}")
    corrupt_logits, corrupt_heads = recorded(corrupt, ids, "head", layers)
    corrupt_at = corrupt_logits[list(positions)].float().cpu()  # [steps, vocab]
    y_corrupt = corrupt_at.argmax(-1)
    steps = len(positions)
    batch = torch.tensor([list(ids)] * steps, device=input_device(clean.module))
    clean_heads: dict[int, Tensor] = {}
    deltas: dict[int, Tensor] = {}

    def grad_through(layer: int):
        def fn(activation: Tensor) -> Tensor:
            clean_heads[layer] = activation.detach()
            deltas[layer] = torch.zeros_like(activation, requires_grad=True)
            return activation + deltas[layer]

        return fn

    with torch.enable_grad(), ExitStack() as stack:
        for layer in layers:
            stack.enter_context(attach(clean.module, "head", layer, grad_through(layer)))
        # only the steps' positions through the unembedding: [steps, steps, vocab]
        kept = clean.batch_logits(batch, logits_to_keep=torch.tensor(list(positions)))
        rows = torch.arange(steps, device=kept.device)
        logits = kept[rows, rows].float()  # row r at step r
        y_clean = logits.argmax(-1)
        dl = logits[rows, y_corrupt.to(logits.device)] - logits[rows, y_clean]
        grads = torch.autograd.grad(
            dl.sum(), [deltas[layer] for layer in layers], allow_unused=True
        )
    estimates = []
    for layer, grad in zip(layers, grads, strict=True):
        clean_at = clean_heads[layer][_at(positions, clean_heads[layer])]
        change = corrupt_heads[layer][list(positions)].to(clean_at.device) - clean_at
        grad = torch.zeros_like(change) if grad is None else grad[_at(positions, grad)]
        estimates.append((change.float() * grad.float()).sum(-1).cpu())  # [steps, heads]
    effects = torch.stack(estimates, 1)  # [steps, layers, heads]
    y_clean = y_clean.cpu()
    every = torch.arange(steps)
    dl_corrupt = corrupt_at[every, y_corrupt] - corrupt_at[every, y_clean]
    return [
        (
            effects[r],
            {
                "y_clean": int(y_clean[r]),
                "y_corrupt": int(y_corrupt[r]),
                "dl_clean": float(dl[r].detach()),
                "dl_corrupt": float(dl_corrupt[r]),
            },
        )
        for r in range(steps)
    ]


def _at(positions: Sequence[int], like: Tensor) -> tuple[Tensor, Tensor]:
    """Index of row r at position `positions[r]` of a [steps, T, ...] tensor, on its device."""
    return (torch.arange(len(positions), device=like.device),
            torch.tensor(list(positions), device=like.device))  # fmt: skip


@torch.no_grad()
def exact_head_effect(
    clean: Side, corrupt: Side, ids: Sequence[int], layer: int, head: int
) -> float:
    """The change of `dl` from patching one head at the last position, by full forwards (the
    patcher's reference, `patchers.reference.three_logits`)."""
    batch = torch.tensor([list(ids)], device=input_device(clean.module))
    corrupt_logits, clean_logits, patch_logits = three_logits(
        clean, corrupt, batch, "head", layer, head, batch.shape[1] - 1
    )
    y_corrupt, y_clean = int(corrupt_logits.argmax()), int(clean_logits.argmax())

    def dl(logits: Tensor) -> float:
        return float(logits[y_corrupt] - logits[y_clean])

    return dl(patch_logits) - dl(clean_logits)
