"""Where the two models part on a response: per-token KL and top-1 disagreement.

Teacher-forced: both models read the same prompt and response tokens; at each response position
the next-token distributions are compared, as diffing-toolkit's per-token KL does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from patchers.models import input_device
from patchers.reference import Side


@torch.no_grad()
def token_divergence(
    clean: Side, corrupt: Side, ids: Sequence[int], start: int
) -> dict[str, Tensor]:
    """For every token `ids[t]`, t >= start (the response): `kl` = KL(P_corrupt || P_clean) of
    the distributions that predict it, `disagree` = their argmaxes differ, and `token`."""
    if not 0 < start < len(ids):
        raise ValueError(f"response start {start} outside 1..{len(ids) - 1}")
    batch = torch.tensor([list(ids)], device=input_device(clean.module))
    log_clean = torch.log_softmax(clean.forward(batch)[start - 1 : -1].float(), -1)
    log_corrupt = torch.log_softmax(corrupt.forward(batch)[start - 1 : -1].float(), -1)
    kl = (log_corrupt.exp() * (log_corrupt - log_clean)).sum(-1).clamp_min(0)
    return {
        "token": batch[0, start:].cpu(),
        "kl": kl.cpu(),
        "disagree": (log_clean.argmax(-1) != log_corrupt.argmax(-1)).cpu(),
    }


def first_divergent_step(clean_tokens: Sequence[int], corrupt_tokens: Sequence[int]) -> int | None:
    """The first index where two greedy responses differ (None if one is a prefix of the other
    and they have the same length)."""
    for step, (a, b) in enumerate(zip(clean_tokens, corrupt_tokens, strict=False)):
        if a != b:
            return step
    return (
        None
        if len(clean_tokens) == len(corrupt_tokens)
        else min(map(len, (clean_tokens, corrupt_tokens)))
    )
