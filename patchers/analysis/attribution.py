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
    corrupt_logits, corrupt_heads = recorded(corrupt, ids, "head", layers)
    y_corrupt = int(corrupt_logits[-1].argmax())
    batch = torch.tensor([list(ids)], device=input_device(clean.module))
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
        logits = clean.forward(batch)[-1].float()
        y_clean = int(logits.argmax())
        dl = logits[y_corrupt] - logits[y_clean]
        grads = torch.autograd.grad(dl, [deltas[layer] for layer in layers], allow_unused=True)
    estimates = []
    for layer, grad in zip(layers, grads, strict=True):
        change = corrupt_heads[layer][-1] - clean_heads[layer][0, -1]  # [heads, head_dim]
        grad = torch.zeros_like(change) if grad is None else grad[0, -1]
        estimates.append((change.float() * grad.float()).sum(-1))
    corrupt_last = corrupt_logits[-1].float()
    step = {
        "y_clean": y_clean,
        "y_corrupt": y_corrupt,
        "dl_clean": float(dl.detach()),
        "dl_corrupt": float(corrupt_last[y_corrupt] - corrupt_last[y_clean]),
    }
    return torch.stack(estimates).cpu(), step


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
